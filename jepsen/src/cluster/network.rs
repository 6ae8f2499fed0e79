//! The private network of a run: one network namespace per node and one for the client, each
//! joined by a veth pair to a bridge that lives in a namespace of its own.
//!
//! ```text
//!   kj-n1 (10.77.0.11)   kj-n2 (10.77.0.12)   kj-n3 (10.77.0.13)   kj-client (10.77.0.100)
//!        eth0                 eth0                 eth0                 eth0
//!         |                    |                    |                    |
//!   kj-bridge:  n1 ----------- n2 ----- br0 ------ n3 ---------------- client
//! ```
//!
//! Addresses exist only inside these namespaces, so nothing here can reach (or be reached from)
//! any other network: the harness never sends traffic anywhere but 10.77.0.0/24 inside them.
//! Partitions are iptables rules in the node namespaces; removing the namespaces removes every
//! rule, interface and address with them.

use std::process::Command;

use anyhow::{bail, Context};

/// Every namespace of the harness starts with this prefix, so a later run can remove what a
/// crashed run left behind (and nothing else): `kj-` unless `KARST_JEPSEN_NETNS_PREFIX` names
/// another, which lets two runs share a machine (each removes only its own prefix's leftovers).
pub fn namespace_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        std::env::var("KARST_JEPSEN_NETNS_PREFIX")
            .ok()
            .filter(|prefix| !prefix.is_empty())
            .unwrap_or_else(|| "kj-".to_owned())
    })
}

/// The namespace that holds the bridge.
pub fn bridge_namespace() -> String {
    format!("{}bridge", namespace_prefix())
}

/// The namespace the workload client and the harness itself run in.
pub fn client_namespace() -> String {
    format!("{}client", namespace_prefix())
}
/// The client's address.
pub const CLIENT_ADDRESS: &str = "10.77.0.100";
/// The /24 the namespaces share.
const SUBNET_PREFIX: &str = "10.77.0";

/// A node's id: 1, 2, 3 (also its Kafka `node.id`).
pub type NodeId = u32;

pub fn node_namespace(node: NodeId) -> String {
    format!("{}n{node}", namespace_prefix())
}

pub fn node_address(node: NodeId) -> String {
    format!("{SUBNET_PREFIX}.{}", 10 + node)
}

/// Runs a command and fails with its stderr when it exits non-zero.
pub fn run_command(program: &str, arguments: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(arguments)
        .output()
        .with_context(|| format!("run {program} {}", arguments.join(" ")))?;
    if !output.status.success() {
        bail!(
            "{program} {} exited with {}: {}",
            arguments.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Fails with an installation hint unless every program the harness runs is on PATH:
/// `ip` (iproute2), `setpriv` (util-linux) and `iptables` (only for partitions).
pub fn check_tools(partitions: bool) -> anyhow::Result<()> {
    let mut needed = vec![("ip", "iproute2"), ("setpriv", "util-linux")];
    if partitions {
        needed.push(("iptables", "iptables"));
    }
    for (program, package) in needed {
        let found = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
            .unwrap_or(false);
        if !found {
            bail!("{program} is not installed (apt-get install {package})");
        }
    }
    Ok(())
}

/// Runs `ip` with the given arguments.
fn ip(arguments: &[&str]) -> anyhow::Result<()> {
    run_command("ip", arguments)
}

/// The namespaces of this harness that exist now (ours, or left over from a crashed run).
pub fn existing_namespaces() -> anyhow::Result<Vec<String>> {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("ip netns list")?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(namespace_prefix()))
        .map(str::to_owned)
        .collect())
}

/// Deletes every namespace of the harness; errors are reported, not fatal (clean-up runs on
/// the way out, also after a panic).
pub fn delete_namespaces() {
    match existing_namespaces() {
        Ok(names) => {
            for name in names {
                if let Err(error) = ip(&["netns", "del", &name]) {
                    eprintln!("clean-up: {error:#}");
                }
            }
        }
        Err(error) => eprintln!("clean-up: {error:#}"),
    }
}

/// Creates the bridge namespace, one namespace per node and the client namespace, all joined.
pub fn create(nodes: &[NodeId]) -> anyhow::Result<()> {
    // A crashed earlier run may have left its namespaces: they are ours, remove them.
    delete_namespaces();
    let bridge = bridge_namespace();
    ip(&["netns", "add", &bridge])?;
    ip(&["-n", &bridge, "link", "set", "lo", "up"])?;
    ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
    for node in nodes {
        attach(
            &node_namespace(*node),
            &format!("n{node}"),
            &node_address(*node),
        )?;
    }
    attach(&client_namespace(), "client", CLIENT_ADDRESS)
}

/// Creates `namespace` with an `eth0` at `address`, its peer `port` on the bridge.
fn attach(namespace: &str, port: &str, address: &str) -> anyhow::Result<()> {
    let bridge = bridge_namespace();
    ip(&["netns", "add", namespace])?;
    ip(&["-n", namespace, "link", "set", "lo", "up"])?;
    ip(&[
        "-n", &bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
        namespace,
    ])?;
    ip(&["-n", &bridge, "link", "set", port, "master", "br0"])?;
    ip(&["-n", &bridge, "link", "set", port, "up"])?;
    ip(&[
        "-n",
        namespace,
        "addr",
        "add",
        &format!("{address}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", namespace, "link", "set", "eth0", "up"])
}

/// Moves the calling thread into `namespace`'s network. Called on the main thread before any
/// other thread exists: threads (the tokio runtime, librdkafka's) inherit it.
pub fn enter(namespace: &str) -> anyhow::Result<()> {
    let path = format!("/var/run/netns/{namespace}");
    let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a valid, open namespace file descriptor changes only this thread's
    // network namespace.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if result != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns {path}"));
    }
    Ok(())
}

/// Runs iptables inside a node's namespace (`-w`: wait for the xtables lock).
pub fn iptables(node: NodeId, arguments: &[&str]) -> anyhow::Result<()> {
    let namespace = node_namespace(node);
    let mut full = vec!["netns", "exec", &namespace, "iptables", "-w"];
    full.extend_from_slice(arguments);
    ip(&full)
}

/// `node` drops every packet that comes from `from`.
pub fn drop_from(node: NodeId, from: NodeId) -> anyhow::Result<()> {
    iptables(
        node,
        &["-A", "INPUT", "-s", &node_address(from), "-j", "DROP"],
    )
}

/// Removes every rule the nemesis added on `node`.
pub fn heal(node: NodeId) -> anyhow::Result<()> {
    iptables(node, &["-F", "INPUT"])
}
