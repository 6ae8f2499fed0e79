//! `karst storage`: prepare a node's data directory (like `kafka-storage.sh`).
//!
//! * `karst storage random-uuid` prints a new cluster id.
//! * `karst storage format --cluster-id ID --config FILE` writes `<log.dirs>/meta.properties`,
//!   the directory's identity (cluster id, node id, directory id) that `karst server` checks at
//!   every start. Each node of a cluster is formatted once, with the same cluster id.
//! * `karst storage info --config FILE` prints that identity.
//!
//! These commands work offline: they read the node's config file and touch only its data
//! directory, so they run before any node is up.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::cluster_id::{new_cluster_id, parse_cluster_id};
use crate::config::BrokerConfig;
use crate::meta_properties::{self, FormatOutcome, MetaProperties};

/// Arguments of `karst storage`.
#[derive(Args, Debug)]
pub struct StorageArgs {
    #[command(subcommand)]
    command: StorageCommand,
}

#[derive(Subcommand, Debug)]
enum StorageCommand {
    /// Print a new random cluster id (22 characters of base64url, as Kafka's).
    RandomUuid,
    /// Write the node's identity (meta.properties) into its data directory (log.dirs).
    Format(FormatArgs),
    /// Print the identity of the node's data directory.
    Info(ConfigArgs),
}

/// The node config these commands read, as `karst server` takes it.
#[derive(Args, Debug)]
struct ConfigArgs {
    /// The node's TOML config file (the one `karst server --config` will use).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Sets one config key, overriding the file (repeatable), as for `karst server`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<BrokerConfig> {
        BrokerConfig::load(Some(&self.config), &self.sets)
    }
}

#[derive(Args, Debug)]
struct FormatArgs {
    /// The cluster id (from `karst storage random-uuid`), the same on every node. Default:
    /// the config's `cluster.id`.
    #[arg(long = "cluster-id", short = 't', value_name = "ID")]
    cluster_id: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// Succeed when the directory is already formatted for this cluster and node.
    #[arg(long = "ignore-formatted", short = 'g')]
    ignore_formatted: bool,
}

pub fn run(args: StorageArgs) -> anyhow::Result<()> {
    match args.command {
        StorageCommand::RandomUuid => {
            println!("{}", new_cluster_id());
            Ok(())
        }
        StorageCommand::Format(args) => format(args),
        StorageCommand::Info(args) => info(args),
    }
}

fn format(args: FormatArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let cluster_id = chosen_cluster_id(args.cluster_id, config.cluster_id.as_deref())?;
    parse_cluster_id(&cluster_id)?;
    let dir = &config.log_dir;
    match meta_properties::format(dir, &cluster_id, config.node_id, args.ignore_formatted)? {
        FormatOutcome::Formatted(properties) => {
            println!("Formatted {} with {properties}", dir.display());
        }
        FormatOutcome::AlreadyFormatted(properties) => {
            println!(
                "{} is already formatted with {properties}; left as it is",
                dir.display()
            );
        }
    }
    Ok(())
}

/// `--cluster-id` wins, but must agree with a `cluster.id` in the config: the server checks
/// the directory against the config, so disagreeing ids would format a node that cannot start.
fn chosen_cluster_id(flag: Option<String>, config: Option<&str>) -> anyhow::Result<String> {
    match (flag, config) {
        (Some(flag), Some(config)) if flag != config => anyhow::bail!(
            "--cluster-id {flag} differs from cluster.id = {config:?} in the config file; the \
             node would refuse to start on the formatted directory"
        ),
        (Some(flag), _) => Ok(flag),
        (None, Some(config)) => Ok(config.to_owned()),
        (None, None) => anyhow::bail!(
            "no cluster id: pass --cluster-id (make one with `karst storage random-uuid`) or set \
             cluster.id in the config file"
        ),
    }
}

fn info(args: ConfigArgs) -> anyhow::Result<()> {
    let config = args.load()?;
    let dir = &config.log_dir;
    let found = MetaProperties::read(dir)?
        .with_context(|| format!("{} is not formatted (no meta.properties)", dir.display()))?;
    println!("{}: {found}", dir.display());
    meta_properties::verify(dir, &found, config.cluster_id.as_deref(), config.node_id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "MkU3OEVBNTcwNTJENDM2Qk";

    #[test]
    fn the_cluster_id_comes_from_the_flag_or_the_config_and_they_must_agree() {
        assert_eq!(
            chosen_cluster_id(Some(CLUSTER.into()), None).unwrap(),
            CLUSTER
        );
        assert_eq!(chosen_cluster_id(None, Some(CLUSTER)).unwrap(), CLUSTER);
        assert_eq!(
            chosen_cluster_id(Some(CLUSTER.into()), Some(CLUSTER)).unwrap(),
            CLUSTER
        );
        let conflict = chosen_cluster_id(Some(CLUSTER.into()), Some("other")).unwrap_err();
        assert!(conflict.to_string().contains("differs"), "{conflict}");
        let missing = chosen_cluster_id(None, None).unwrap_err();
        assert!(missing.to_string().contains("random-uuid"), "{missing}");
    }

    #[test]
    fn format_uses_the_config_s_log_dirs_and_node_id() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("node.toml");
        std::fs::write(
            &config,
            format!("\"node.id\" = 7\n\"log.dirs\" = \"{}\"\n", data.display()),
        )
        .unwrap();
        let args = |ignore_formatted| FormatArgs {
            cluster_id: Some(CLUSTER.into()),
            config: ConfigArgs {
                config: config.clone(),
                sets: vec![],
            },
            ignore_formatted,
        };

        format(args(false)).unwrap();
        let written = MetaProperties::read(&data).unwrap().unwrap();
        assert_eq!((written.cluster_id.as_str(), written.node_id), (CLUSTER, 7));

        assert!(format(args(false)).is_err(), "a second format is refused");
        format(args(true)).unwrap();
    }

    #[test]
    fn a_malformed_cluster_id_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("node.toml");
        std::fs::write(&config, format!("\"log.dirs\" = \"{}\"\n", data.display())).unwrap();
        let error = format(FormatArgs {
            cluster_id: Some("not-a-cluster-id".into()),
            config: ConfigArgs {
                config,
                sets: vec![],
            },
            ignore_formatted: false,
        })
        .unwrap_err();
        assert!(error.to_string().contains("22"), "{error}");
        assert!(!data.exists());
    }
}
