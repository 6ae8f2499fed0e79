//! The `karst` binary: one executable for the broker and its command-line tools.
//!
//! `karst server` runs a node; the other subcommands are small Kafka clients whose flags follow
//! the Kafka tools (`--bootstrap-server`, `--topic`, `--partitions`, ...).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "karst",
    version,
    about = "Kafka-compatible event-streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker node (with no arguments: a single node on 127.0.0.1:9092, data in ./karst-data).
    Server(karst::server::ServerArgs),
    /// Create, list, describe, alter and delete topics.
    Topics(karst::cli::topics::TopicsArgs),
    /// Produce lines from standard input as records.
    Produce(karst::cli::produce::ProduceArgs),
    /// Consume records and print them.
    Consume(karst::cli::consume::ConsumeArgs),
    /// List, describe, reset and delete consumer groups and their committed offsets.
    Groups(karst::cli::groups::GroupsArgs),
    /// Describe the idempotent producers of a topic's partitions.
    Producers(karst::cli::producers::ProducersArgs),
    /// Prepare a node's data directory: format it for a cluster, print a new cluster id.
    Storage(karst::cli::storage::StorageArgs),
    /// Describe the cluster: the metadata quorum and the registered brokers.
    Cluster(karst::cli::cluster::ClusterArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => karst::server::run(args),
        Command::Topics(args) => karst::cli::run(karst::cli::topics::run(args)),
        Command::Produce(args) => karst::cli::run(karst::cli::produce::run(args)),
        Command::Consume(args) => karst::cli::run(karst::cli::consume::run(args)),
        Command::Groups(args) => karst::cli::run(karst::cli::groups::run(args)),
        Command::Producers(args) => karst::cli::run(karst::cli::producers::run(args)),
        Command::Storage(args) => karst::cli::storage::run(args),
        Command::Cluster(args) => karst::cli::run(karst::cli::cluster::run(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("karst: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
