//! Command-line tools (`karst topics|produce|consume|groups|producers|storage|cluster`): thin front ends over
//! [`crate::client`] (`storage` works offline, on the node's config and data directory).
//!
//! Flags follow the Kafka tools (`kafka-topics.sh`, `kafka-console-producer.sh`,
//! `kafka-console-consumer.sh`) wherever they have an equivalent, so a Kafka user can guess
//! them. Results go to standard output; progress and summaries go to standard error.

pub mod cluster;
pub mod consume;
pub mod groups;
pub mod produce;
pub mod producers;
pub mod reassign;
pub mod storage;
pub mod topics;

use anyhow::Context as _;

use crate::client::Client;

/// Where the tools look for a broker when `--bootstrap-server` is not given: the address
/// `karst server` listens on by default.
pub const DEFAULT_BOOTSTRAP_SERVER: &str = "127.0.0.1:9092";

/// Runs one CLI command on a small current-thread runtime.
pub fn run<F>(command: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}

/// The `--bootstrap-server` flag every command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct BootstrapArgs {
    /// Broker(s) to connect to first, HOST:PORT (comma-separated: tried in order).
    #[arg(
        long = "bootstrap-server",
        value_name = "HOST:PORT",
        default_value = DEFAULT_BOOTSTRAP_SERVER,
        global = true
    )]
    pub bootstrap_server: String,
}

impl BootstrapArgs {
    /// Connects to the first reachable bootstrap server.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let mut last_error = None;
        for address in self
            .bootstrap_server
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Client::connect(address).await {
                Ok(client) => return Ok(client),
                Err(error) => last_error = Some(error),
            }
        }
        match last_error {
            Some(error) => Err(error).context("no bootstrap server is reachable"),
            None => anyhow::bail!("--bootstrap-server names no address"),
        }
    }
}

/// Parses `key=value` (the value may contain further `=`).
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(
            parse_key_value("retention.ms="),
            Ok(("retention.ms".into(), String::new()))
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=value").is_err());
    }
}
