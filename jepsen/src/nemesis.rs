//! Nemeses: the faults a run injects, in alternating fault and heal windows.
//!
//! | family | faults |
//! |---|---|
//! | `partition` | `partition-isolate-one`, `-isolate-controller`, `-isolate-leader` (of an active key's partition), `-isolate-minority`, `partition-one-way` (a node stops hearing one other node) |
//! | `kill` | SIGKILL `kill-one`, `kill-controller`, `kill-leader`, `kill-minority`, `kill-all`; healed by restarting |
//! | `pause` | SIGSTOP `pause-one`, `pause-controller`, `pause-leader`, `pause-minority`; healed by SIGCONT |
//! | `clock` | `clock-bump-one` (one node's wall clock moves by up to ±300 s), `clock-skew-all` (every node a different offset), `clock-strobe-one` (one node's clock flips between an offset of up to ±300 s and true time every 10–200 ms); libfaketime, healed by offset 0 |
//! | `bitflip` | `bitflip-one`: one bit of a random byte of a sealed segment of one node's replica of a workload partition flips, through the file (so the page cache holds it too) and synced; not healed |
//! | `lose-unsynced` | `lose-unsynced-one`, `-controller`, `-leader`, `-minority`, `-all`: SIGKILL, then every write the node had not synced is dropped ([`crate::cluster::unsynced`]); healed by restarting |
//!
//! Each fault window takes the next family of a round (every family once, shuffled), so a
//! run with as many windows as families injects each. A minority is (n - 1) / 2 random
//! nodes: one of three, two of five. The controller and
//! partition-leader variants aim at the node whose loss matters most. Partitions
//! are `INPUT` drops in the node namespaces ([`crate::cluster::network`]), both directions for a
//! full partition, one for `one-way`; the client keeps reaching every node. Every heal removes
//! all rules, resets clocks, resumes paused nodes and restarts killed ones, whatever the fault
//! was.
//!
//! Clock faults move CLOCK_REALTIME only (the monotonic clock would stall every timer).

use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::cluster::network::{self, NodeId};
use crate::cluster::Cluster;
use crate::random::Random;

/// Largest clock bump (seconds): far beyond any timeout, far below retention (7 days), so a
/// bump cannot legitimately delete data.
const CLOCK_OFFSET_SECONDS_MAX: u64 = 300;
/// Shortest and longest time a strobed clock stays at one value (milliseconds): from many
/// flips between two heartbeats (Raft and broker heartbeats are 100s of ms apart) to a few.
const STROBE_PERIOD_MS_MIN: u64 = 10;
const STROBE_PERIOD_MS_MAX: u64 = 200;

/// A family of faults the run may choose from (`--nemesis partition,kill,pause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Partition,
    Kill,
    Pause,
    Clock,
    LoseUnsynced,
    Bitflip,
}

impl FromStr for Family {
    type Err = anyhow::Error;
    fn from_str(name: &str) -> anyhow::Result<Family> {
        match name {
            "partition" => Ok(Family::Partition),
            "kill" => Ok(Family::Kill),
            "pause" => Ok(Family::Pause),
            "clock" if std::path::Path::new(crate::cluster::node::LIBFAKETIME).exists() => {
                Ok(Family::Clock)
            }
            "clock" => bail!(
                "nemesis clock needs {} (apt-get install faketime)",
                crate::cluster::node::LIBFAKETIME
            ),
            "lose-unsynced" if std::path::Path::new("/dev/fuse").exists() => {
                Ok(Family::LoseUnsynced)
            }
            "lose-unsynced" => bail!("nemesis lose-unsynced needs /dev/fuse (FUSE)"),
            "bitflip" => Ok(Family::Bitflip),
            other => bail!(
                "unknown nemesis {other}: expected partition, kill, pause, clock, lose-unsynced or bitflip"
            ),
        }
    }
}

/// Which node a fault aims at, when it aims.
#[derive(Debug, Clone, Copy)]
enum Target {
    Controller,
    /// The leader of the partition [`Nemesis::aim_at_partition`] named.
    Leader,
}

/// One concrete fault, chosen by [`Nemesis::choose`].
#[derive(Debug, Clone)]
pub enum Fault {
    /// The nodes of `isolated` drop packets from every other node, and those from them (the
    /// isolated nodes still reach each other).
    Isolate {
        name: String,
        isolated: Vec<NodeId>,
    },
    /// `deaf` drops packets from `from` (but `from` still hears `deaf`).
    OneWay {
        deaf: NodeId,
        from: NodeId,
    },
    Kill {
        name: String,
        nodes: Vec<NodeId>,
    },
    /// SIGKILL, then the node's unsynced writes are dropped.
    LoseUnsynced {
        name: String,
        nodes: Vec<NodeId>,
    },
    Pause {
        name: String,
        nodes: Vec<NodeId>,
    },
    /// Each listed node's wall clock moves by its offset (seconds).
    Clock {
        name: String,
        offsets: Vec<(NodeId, i64)>,
    },
    /// Bit `bit` of byte `position` of `segment` (a sealed segment file of `node`) flips.
    Bitflip {
        node: NodeId,
        segment: std::path::PathBuf,
        position: u64,
        bit: u8,
    },
    /// `node`'s wall clock flips between `offset_seconds` off and true time every `period`.
    ClockStrobe {
        node: NodeId,
        offset_seconds: i64,
        period: Duration,
    },
}

impl Fault {
    pub fn name(&self) -> String {
        match self {
            Fault::Isolate { name, .. }
            | Fault::Kill { name, .. }
            | Fault::LoseUnsynced { name, .. }
            | Fault::Pause { name, .. } => name.clone(),
            Fault::OneWay { .. } => "partition-one-way".to_owned(),
            Fault::Clock { name, offsets } => {
                let offsets: Vec<String> = offsets
                    .iter()
                    .map(|(node, seconds)| format!("n{node}{seconds:+}s"))
                    .collect();
                format!("{name} {}", offsets.join(" "))
            }
            Fault::Bitflip {
                node,
                segment,
                position,
                bit,
            } => format!(
                "bitflip-one n{node} {}@{position}/bit{bit}",
                segment_label(segment)
            ),
            Fault::ClockStrobe {
                node,
                offset_seconds,
                period,
            } => format!(
                "clock-strobe-one n{node}{offset_seconds:+}s/{}ms",
                period.as_millis()
            ),
        }
    }

    pub fn nodes(&self) -> Vec<NodeId> {
        match self {
            Fault::Isolate { isolated, .. } => isolated.clone(),
            Fault::OneWay { deaf, from } => vec![*deaf, *from],
            Fault::Kill { nodes, .. }
            | Fault::LoseUnsynced { nodes, .. }
            | Fault::Pause { nodes, .. } => nodes.clone(),
            Fault::Clock { offsets, .. } => offsets.iter().map(|(node, _)| *node).collect(),
            Fault::ClockStrobe { node, .. } => vec![*node],
            Fault::Bitflip { node, .. } => vec![*node],
        }
    }
}

pub struct Nemesis {
    families: Vec<Family>,
    /// The families not drawn yet in this round: each comes once per round, in random
    /// order, so a run of as many fault windows as families injects every one.
    round: Vec<Family>,
    random: Random,
    /// The topic and partition whose leader `Target::Leader` aims at.
    topic: String,
    leader_partition: u32,
}

impl Nemesis {
    pub fn new(families: Vec<Family>, seed: u64, topic: &str) -> Nemesis {
        Nemesis {
            families,
            round: Vec::new(),
            random: Random::new(seed),
            topic: topic.to_owned(),
            leader_partition: 0,
        }
    }

    /// Aims the leader faults at `partition`'s leader from now on (the workload moves on to
    /// new keys, and a fault on the leader of a retired key tests little).
    pub fn aim_at_partition(&mut self, partition: u32) {
        self.leader_partition = partition;
    }

    /// Picks the next fault: the next family of this round, then a variant, then its target
    /// node(s). A bit flip with no sealed segment to hit yet stays in the round, and another
    /// family goes first.
    pub fn choose(&mut self, cluster: &Cluster) -> anyhow::Result<Fault> {
        if self.round.is_empty() {
            self.round = self.families.clone();
        }
        let index = self.random.below(self.round.len() as u64) as usize;
        let family = self.round.swap_remove(index);
        if family != Family::Bitflip {
            return self.choose_in(family, cluster);
        }
        let error = match self.choose_bitflip(cluster) {
            Ok(fault) => return Ok(fault),
            Err(error) => error,
        };
        let others: Vec<Family> = self
            .families
            .iter()
            .copied()
            .filter(|f| *f != Family::Bitflip)
            .collect();
        if others.is_empty() {
            return Err(error);
        }
        println!("karst-jepsen: no bit flip yet ({error:#}); another fault first");
        let family = match self.round.iter().position(|f| *f != Family::Bitflip) {
            Some(index) => self.round.swap_remove(index),
            None => others[self.random.below(others.len() as u64) as usize],
        };
        self.round.push(Family::Bitflip);
        self.choose_in(family, cluster)
    }

    /// A fault of `family`: a variant, then its target node(s).
    fn choose_in(&mut self, family: Family, cluster: &Cluster) -> anyhow::Result<Fault> {
        let ids = cluster.ids();
        Ok(match family {
            Family::Partition if self.random.below(5) == 0 => {
                let deaf = self.pick(&ids);
                let others: Vec<NodeId> = ids.iter().copied().filter(|n| *n != deaf).collect();
                Fault::OneWay {
                    deaf,
                    from: self.pick(&others),
                }
            }
            Family::Partition => {
                let (variant, isolated) = self.choose_nodes(cluster, false);
                Fault::Isolate {
                    name: format!("partition-isolate-{variant}"),
                    isolated,
                }
            }
            Family::Kill => {
                let (variant, nodes) = self.choose_nodes(cluster, true);
                Fault::Kill {
                    name: format!("kill-{variant}"),
                    nodes,
                }
            }
            Family::LoseUnsynced => {
                let (variant, nodes) = self.choose_nodes(cluster, true);
                Fault::LoseUnsynced {
                    name: format!("lose-unsynced-{variant}"),
                    nodes,
                }
            }
            Family::Pause => {
                let (variant, nodes) = self.choose_nodes(cluster, false);
                Fault::Pause {
                    name: format!("pause-{variant}"),
                    nodes,
                }
            }
            Family::Clock => self.choose_clock(&ids),
            Family::Bitflip => self.choose_bitflip(cluster)?,
        })
    }

    /// A random byte of a random sealed segment (not the newest of its partition) of the
    /// workload topic on a random node, and a random bit of it.
    fn choose_bitflip(&mut self, cluster: &Cluster) -> anyhow::Result<Fault> {
        let ids = cluster.ids();
        let node = self.pick(&ids);
        let data = cluster.node(node).data_directory();
        let mut sealed = Vec::new();
        for entry in std::fs::read_dir(&data)? {
            let directory = entry?.path();
            let name = directory.file_name().unwrap_or_default().to_string_lossy();
            if !name.starts_with(&format!("{}-", self.topic)) || !directory.is_dir() {
                continue;
            }
            let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(&directory)?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.extension().is_some_and(|e| e == "log"))
                .collect();
            segments.sort();
            segments.pop(); // the active segment
            sealed.extend(segments);
        }
        sealed.sort();
        let sizes: Vec<u64> = sealed
            .iter()
            .map(|path| std::fs::metadata(path).map_or(0, |m| m.len()))
            .collect();
        let candidates: Vec<usize> = (0..sealed.len()).filter(|i| sizes[*i] > 0).collect();
        if candidates.is_empty() {
            bail!("node {node} has no sealed segment of {} yet", self.topic);
        }
        let chosen = candidates[self.random.below(candidates.len() as u64) as usize];
        Ok(Fault::Bitflip {
            node,
            segment: sealed[chosen].clone(),
            position: self.random.below(sizes[chosen]),
            bit: self.random.below(8) as u8,
        })
    }

    /// The nodes a fault hits and the variant's name: one random node, the controller, the
    /// leader of the aimed-at partition, a random minority, or (if `all_allowed`) every node.
    fn choose_nodes(
        &mut self,
        cluster: &Cluster,
        all_allowed: bool,
    ) -> (&'static str, Vec<NodeId>) {
        let ids = cluster.ids();
        let variants = if all_allowed { 5 } else { 4 };
        match self.random.below(variants) {
            0 => ("one", vec![self.pick(&ids)]),
            1 => (
                "controller",
                vec![self.resolve(Target::Controller, cluster)],
            ),
            2 => ("leader", vec![self.resolve(Target::Leader, cluster)]),
            3 => ("minority", self.minority(&ids)),
            _ => ("all", ids),
        }
    }

    /// A random minority: (n - 1) / 2 distinct nodes (one of 3, two of 5).
    fn minority(&mut self, ids: &[NodeId]) -> Vec<NodeId> {
        let mut left = ids.to_vec();
        let mut chosen = Vec::new();
        while chosen.len() < (ids.len() - 1) / 2 {
            chosen.push(left.remove(self.random.below(left.len() as u64) as usize));
        }
        chosen.sort();
        chosen
    }

    fn choose_clock(&mut self, ids: &[NodeId]) -> Fault {
        let nodes = match self.random.below(3) {
            0 => vec![self.pick(ids)],
            1 => ids.to_vec(),
            _ => {
                let node = self.pick(ids);
                let offset_seconds = self.clock_offset_seconds();
                let period_ms = STROBE_PERIOD_MS_MIN
                    + self
                        .random
                        .below(STROBE_PERIOD_MS_MAX - STROBE_PERIOD_MS_MIN + 1);
                return Fault::ClockStrobe {
                    node,
                    offset_seconds,
                    period: Duration::from_millis(period_ms),
                };
            }
        };
        let name = if nodes.len() == 1 {
            "clock-bump-one"
        } else {
            "clock-skew-all"
        };
        let offsets = nodes
            .into_iter()
            .map(|node| (node, self.clock_offset_seconds()))
            .collect();
        Fault::Clock {
            name: name.to_owned(),
            offsets,
        }
    }

    /// A clock offset of 1..=300 seconds, either way.
    fn clock_offset_seconds(&mut self) -> i64 {
        let magnitude = 1 + self.random.below(CLOCK_OFFSET_SECONDS_MAX) as i64;
        if self.random.below(2) == 0 {
            magnitude
        } else {
            -magnitude
        }
    }

    fn pick(&mut self, ids: &[NodeId]) -> NodeId {
        ids[self.random.below(ids.len() as u64) as usize]
    }

    /// The node a target means now; falls back to a random node when the cluster cannot say
    /// (no controller elected, no leader known) — that fault is still worth injecting.
    fn resolve(&mut self, target: Target, cluster: &Cluster) -> NodeId {
        let found = match target {
            Target::Controller => cluster.controller().ok(),
            Target::Leader => cluster
                .partition_leader(&self.topic, self.leader_partition)
                .ok(),
        };
        found.unwrap_or_else(|| self.pick(&cluster.ids()))
    }
}

/// Injects `fault` into `cluster`.
pub fn inject(fault: &Fault, cluster: &mut Cluster) -> anyhow::Result<()> {
    match fault {
        Fault::Isolate { isolated, .. } => {
            cluster.partitioned = true;
            for inside in isolated {
                for outside in cluster.ids().into_iter().filter(|n| !isolated.contains(n)) {
                    network::drop_from(*inside, outside)?;
                    network::drop_from(outside, *inside)?;
                }
            }
        }
        Fault::OneWay { deaf, from } => {
            cluster.partitioned = true;
            network::drop_from(*deaf, *from)?;
        }
        Fault::Kill { nodes, .. } => {
            for node in nodes {
                cluster.node_mut(*node).kill()?;
            }
        }
        Fault::LoseUnsynced { nodes, .. } => {
            for node in nodes {
                let report = cluster.node_mut(*node).crash()?;
                let files: Vec<String> = report
                    .dropped
                    .iter()
                    .map(|(path, bytes)| format!("{} ({bytes})", path.display()))
                    .collect();
                println!(
                    "karst-jepsen: node {node} lost {} unsynced bytes in {} files: {}",
                    report.bytes,
                    report.files,
                    files.join(", ")
                );
            }
        }
        Fault::Pause { nodes, .. } => {
            for node in nodes {
                cluster.node_mut(*node).pause(true)?;
            }
        }
        Fault::Clock { offsets, .. } => {
            for (node, seconds) in offsets {
                cluster.node_mut(*node).set_clock_offset(*seconds)?;
            }
        }
        Fault::Bitflip {
            segment,
            position,
            bit,
            ..
        } => flip_bit(segment, *position, *bit)?,
        Fault::ClockStrobe {
            node,
            offset_seconds,
            period,
        } => cluster
            .node_mut(*node)
            .start_strobe(*offset_seconds, *period),
    }
    Ok(())
}

/// `partition-directory/segment-file`, for fault names.
fn segment_label(segment: &std::path::Path) -> String {
    let mut parts = segment.iter().rev().take(2).collect::<Vec<_>>();
    parts.reverse();
    parts
        .iter()
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Flips one bit of a file in place, through the page cache (what a running node's next read
/// of it sees, whether from the disk or the cache), and syncs it.
fn flip_bit(path: &std::path::Path, position: u64, bit: u8) -> anyhow::Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, position)?;
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, position)?;
    // Synced: the damage is on the disk, so a later `lose-unsynced` crash does not undo it.
    file.sync_all()
        .with_context(|| format!("sync {}", path.display()))?;
    Ok(())
}

/// Undoes every fault: removes all partition rules, resets clocks, resumes paused nodes,
/// restarts stopped ones and waits until each listens. Every step runs even when an earlier
/// one failed (a node must come back even if iptables is broken); the first error is returned.
pub fn heal(cluster: &mut Cluster) -> anyhow::Result<()> {
    let mut errors: Vec<anyhow::Error> = Vec::new();
    let partitioned = std::mem::take(&mut cluster.partitioned);
    for id in cluster.ids() {
        if partitioned {
            if let Err(error) = network::heal(id) {
                errors.push(error);
            }
        }
        let node = cluster.node_mut(id);
        if node.has_faketime() {
            match node.stop_strobe() {
                Ok(0) => {}
                Ok(flips) => {
                    println!("karst-jepsen: node {id}'s clock strobe made {flips} changes")
                }
                Err(error) => errors.push(error),
            }
            if let Err(error) = node.set_clock_offset(0) {
                errors.push(error);
            }
        }
        if node.is_paused() {
            if let Err(error) = node.pause(false) {
                errors.push(error);
            }
        }
    }
    if let Err(error) = cluster.start_stopped() {
        errors.push(error.context("restart nodes"));
    }
    match errors.into_iter().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
