//! Topic configs: Kafka's names, types and defaults, each backed by the broker key that
//! supplies its default (`retention.ms` <- `log.retention.ms`, ...).
//!
//! `enforced` says whether Karst acts on the key today. Keys Kafka has but Karst does not
//! act on yet are accepted and stored (clients and tools set them routinely) and are listed
//! as such in docs/ARCHITECTURE.md; values that would promise behaviour Karst lacks
//! (tiered storage) are refused with INVALID_CONFIG.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use karst_storage::compression::{GZIP_LEVELS, GZIP_LEVEL_DEFAULT, LZ4_LEVELS, ZSTD_LEVELS};
use karst_storage::{CompressionLevels, LogConfig, TopicCompression};

use super::{BrokerConfig, ConfigSource, ConfigType};

pub struct TopicKey {
    pub name: &'static str,
    pub kind: ConfigType,
    /// Broker keys that give the default, most specific first.
    pub broker_keys: &'static [&'static str],
    /// Default when no broker key applies.
    pub default: &'static str,
    pub enforced: bool,
}

macro_rules! topic_keys {
    ($($name:literal, $kind:ident, [$($broker:literal),*], $default:literal, $enforced:literal;)*) => {
        &[$(TopicKey { name: $name, kind: ConfigType::$kind, broker_keys: &[$($broker),*], default: $default, enforced: $enforced },)*]
    };
}

pub const TOPIC_KEYS: &[TopicKey] = topic_keys![
    "cleanup.policy", List, ["log.cleanup.policy"], "delete", true;
    "compression.type", String, ["compression.type"], "producer", true;
    "compression.gzip.level", Int, ["compression.gzip.level"], "-1", true;
    "compression.lz4.level", Int, ["compression.lz4.level"], "9", true;
    "compression.zstd.level", Int, ["compression.zstd.level"], "3", true;
    "delete.retention.ms", Long, ["log.cleaner.delete.retention.ms"], "86400000", true;
    "file.delete.delay.ms", Long, [], "60000", false;
    "flush.messages", Long, ["log.flush.interval.messages"], "1", true;
    "flush.ms", Long, ["log.flush.interval.ms"], "9223372036854775807", true;
    "follower.replication.throttled.replicas", List, [], "", false;
    "index.interval.bytes", Int, ["log.index.interval.bytes"], "4096", true;
    "leader.replication.throttled.replicas", List, [], "", false;
    "local.retention.bytes", Long, [], "-2", false;
    "local.retention.ms", Long, [], "-2", false;
    "max.compaction.lag.ms", Long, ["log.cleaner.max.compaction.lag.ms"], "9223372036854775807", true;
    "max.message.bytes", Int, ["message.max.bytes"], "1048588", true;
    "message.timestamp.after.max.ms", Long, ["log.message.timestamp.after.max.ms"], "3600000", true;
    "message.timestamp.before.max.ms", Long, ["log.message.timestamp.before.max.ms"], "9223372036854775807", true;
    "message.timestamp.type", String, ["log.message.timestamp.type"], "CreateTime", true;
    "min.cleanable.dirty.ratio", Double, ["log.cleaner.min.cleanable.ratio"], "0.5", true;
    "min.compaction.lag.ms", Long, ["log.cleaner.min.compaction.lag.ms"], "0", true;
    "min.insync.replicas", Int, ["min.insync.replicas"], "1", true;
    "preallocate", Boolean, [], "false", false;
    "remote.storage.enable", Boolean, [], "false", true;
    "retention.bytes", Long, ["log.retention.bytes"], "-1", true;
    "retention.ms", Long, ["log.retention.ms", "log.retention.minutes", "log.retention.hours"], "604800000", true;
    "segment.bytes", Int, ["log.segment.bytes"], "1073741824", true;
    "segment.index.bytes", Int, [], "10485760", false;
    "segment.jitter.ms", Long, [], "0", false;
    "segment.ms", Long, ["log.roll.ms", "log.roll.hours"], "604800000", true;
    "unclean.leader.election.enable", Boolean, ["unclean.leader.election.enable"], "false", true;
];

pub fn key(name: &str) -> Option<&'static TopicKey> {
    TOPIC_KEYS.iter().find(|k| k.name == name)
}

/// One resolved value with where it came from, for DescribeConfigs.
pub struct ResolvedValue {
    pub value: String,
    pub source: ConfigSource,
    /// (broker key, value, source) entries below the winning one, Kafka's synonyms.
    pub synonyms: Vec<(String, String, ConfigSource)>,
}

/// The effective value of topic key `def` given the topic's overrides.
pub fn resolve(
    def: &TopicKey,
    overrides: &BTreeMap<String, String>,
    broker: &BrokerConfig,
) -> ResolvedValue {
    let mut synonyms = Vec::new();
    if let Some(value) = overrides.get(def.name) {
        synonyms.push((
            def.name.to_owned(),
            value.clone(),
            ConfigSource::TopicConfig,
        ));
    }
    let (broker_value, broker_key) = if def.broker_keys.is_empty() {
        (def.default.to_owned(), None)
    } else {
        broker.topic_default(def.broker_keys)
    };
    if let Some(name) = broker_key {
        synonyms.push((
            name.to_owned(),
            broker_value.clone(),
            ConfigSource::StaticBrokerConfig,
        ));
    }
    if let Some(first) = def.broker_keys.first() {
        let built_in = super::broker::key(first).map_or(def.default, |k| k.default);
        synonyms.push((
            (*first).to_owned(),
            built_in.to_owned(),
            ConfigSource::DefaultConfig,
        ));
    }
    let (value, source) = match overrides.get(def.name) {
        Some(value) => (value.clone(), ConfigSource::TopicConfig),
        None if broker_key.is_some() => (broker_value, ConfigSource::StaticBrokerConfig),
        None => (broker_value, ConfigSource::DefaultConfig),
    };
    ResolvedValue {
        value,
        source,
        synonyms,
    }
}

/// Checks one topic config assignment; the message is what INVALID_CONFIG carries.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let def = key(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
    def.kind
        .check(value)
        .map_err(|problem| format!("Invalid value {value} for configuration {name}: {problem}"))?;
    let number = || value.trim().parse::<i64>().unwrap_or(0);
    let problem = match name {
        "cleanup.policy" => value
            .split(',')
            .map(str::trim)
            .find(|policy| !matches!(*policy, "delete" | "compact"))
            .map(|policy| format!("{policy} is not a valid cleanup.policy")),
        "min.cleanable.dirty.ratio"
            if !(0.0..=1.0).contains(&value.trim().parse::<f64>().unwrap_or(-1.0)) =>
        {
            Some("min.cleanable.dirty.ratio must be between 0 and 1".to_owned())
        }
        "delete.retention.ms" | "min.compaction.lag.ms" if number() < 0 => {
            Some(format!("{name} must be at least 0"))
        }
        "max.compaction.lag.ms" if number() < 1 => {
            Some("max.compaction.lag.ms must be at least 1".to_owned())
        }
        "compression.type" if TopicCompression::parse(value).is_none() => Some(
            "String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer".to_owned(),
        ),
        "compression.gzip.level"
            if number() != i64::from(GZIP_LEVEL_DEFAULT) && !in_range(number(), &GZIP_LEVELS) =>
        {
            Some(format!(
                "Value must be between {} and {}, or {GZIP_LEVEL_DEFAULT} for the default",
                GZIP_LEVELS.start(),
                GZIP_LEVELS.end()
            ))
        }
        "compression.lz4.level" => level_problem(number(), &LZ4_LEVELS),
        "compression.zstd.level" => level_problem(number(), &ZSTD_LEVELS),
        "message.timestamp.before.max.ms" | "message.timestamp.after.max.ms" if number() < 0 => {
            Some(format!("{name} must be at least 0"))
        }
        "message.timestamp.type" if !matches!(value, "CreateTime" | "LogAppendTime") => {
            Some(format!("{value} is not CreateTime or LogAppendTime"))
        }
        "remote.storage.enable" if value == "true" => {
            Some("tiered storage is not supported".to_owned())
        }
        "segment.bytes" if number() < 14 => Some("segment.bytes must be at least 14".to_owned()),
        "flush.messages" | "flush.ms" | "segment.ms" if number() < 1 => {
            Some(format!("{name} must be at least 1"))
        }
        "index.interval.bytes" | "max.message.bytes" if number() < 0 => {
            Some(format!("{name} must be at least 0"))
        }
        "min.insync.replicas" if number() < 1 => {
            Some("min.insync.replicas must be at least 1".to_owned())
        }
        "retention.ms" | "retention.bytes" if number() < -1 => {
            Some(format!("{name} must be at least -1"))
        }
        _ => None,
    };
    match problem {
        Some(problem) => Err(format!(
            "Invalid value {value} for configuration {name}: {problem}"
        )),
        None => Ok(()),
    }
}

fn in_range(value: i64, range: &RangeInclusive<i32>) -> bool {
    (i64::from(*range.start())..=i64::from(*range.end())).contains(&value)
}

/// Kafka's complaint about a compression level outside `range`.
fn level_problem(level: i64, range: &RangeInclusive<i32>) -> Option<String> {
    if level < i64::from(*range.start()) {
        Some(format!("Value must be at least {}", range.start()))
    } else if level > i64::from(*range.end()) {
        Some(format!("Value must be no more than {}", range.end()))
    } else {
        None
    }
}

/// The storage settings of a topic: overrides over broker defaults.
pub fn log_config(overrides: &BTreeMap<String, String>, broker: &BrokerConfig) -> LogConfig {
    let value = |name: &str| resolve(key(name).expect("declared"), overrides, broker).value;
    let long = |name: &str| value(name).trim().parse::<i64>().expect("validated");
    let policy = value("cleanup.policy");
    let policies: Vec<&str> = policy.split(',').map(str::trim).collect();
    LogConfig {
        segment_bytes: long("segment.bytes").max(14) as u64,
        segment_ms: long("segment.ms"),
        retention_bytes: long("retention.bytes"),
        retention_ms: long("retention.ms"),
        index_interval_bytes: long("index.interval.bytes").max(0) as u64,
        flush_messages: long("flush.messages"),
        flush_ms: long("flush.ms"),
        max_message_bytes: long("max.message.bytes").max(0) as usize,
        log_append_time: value("message.timestamp.type") == "LogAppendTime",
        message_timestamp_before_max_ms: long("message.timestamp.before.max.ms"),
        message_timestamp_after_max_ms: long("message.timestamp.after.max.ms"),
        compression: TopicCompression::parse(&value("compression.type")).expect("validated"),
        compression_levels: CompressionLevels {
            gzip: long("compression.gzip.level") as i32,
            lz4: long("compression.lz4.level") as i32,
            zstd: long("compression.zstd.level") as i32,
        },
        cleanup_delete: policies.contains(&"delete"),
        cleanup_compact: policies.contains(&"compact"),
        delete_retention_ms: long("delete.retention.ms"),
        min_cleanable_dirty_ratio: value("min.cleanable.dirty.ratio")
            .trim()
            .parse()
            .expect("validated"),
        min_compaction_lag_ms: long("min.compaction.lag.ms"),
        max_compaction_lag_ms: long("max.compaction.lag.ms"),
        producer_id_expiration_ms: broker.producer_id_expiration_ms,
    }
}

/// `min.insync.replicas` of a topic.
pub fn min_insync_replicas(overrides: &BTreeMap<String, String>, broker: &BrokerConfig) -> i32 {
    resolve(
        key("min.insync.replicas").expect("declared"),
        overrides,
        broker,
    )
    .value
    .parse()
    .unwrap_or(1)
}

/// `unclean.leader.election.enable` of a topic: may a replica outside the ISR become leader
/// when no in-sync one is alive (losing what only the ISR had)?
pub fn unclean_leader_election(
    overrides: &BTreeMap<String, String>,
    broker: &BrokerConfig,
) -> bool {
    resolve(
        key("unclean.leader.election.enable").expect("declared"),
        overrides,
        broker,
    )
    .value
        == "true"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_overrides_win_over_broker_defaults() {
        let broker = BrokerConfig::load(None, &["log.retention.ms=5000".to_owned()]).unwrap();
        let mut overrides = BTreeMap::new();
        let resolved = resolve(key("retention.ms").unwrap(), &overrides, &broker);
        assert_eq!(
            (resolved.value.as_str(), resolved.source),
            ("5000", ConfigSource::StaticBrokerConfig)
        );
        overrides.insert("retention.ms".to_owned(), "10".to_owned());
        let resolved = resolve(key("retention.ms").unwrap(), &overrides, &broker);
        assert_eq!(
            (resolved.value.as_str(), resolved.source),
            ("10", ConfigSource::TopicConfig)
        );
        assert_eq!(resolved.synonyms.len(), 3);
        assert_eq!(log_config(&overrides, &broker).retention_ms, 10);
    }

    #[test]
    fn unknown_and_malformed_topic_configs_are_refused() {
        assert!(validate("retention.mss", "1").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("cleanup.policy", "compact").is_ok());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
    }

    #[test]
    fn every_kafka_compression_type_and_level_range_is_accepted() {
        for codec in ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"] {
            assert!(validate("compression.type", codec).is_ok(), "{codec}");
        }
        assert!(validate("compression.type", "none").is_err());
        assert!(validate("compression.type", "brotli").is_err());
        for (name, good, bad) in [
            (
                "compression.gzip.level",
                ["-1", "1", "9"],
                ["0", "10", "-2"],
            ),
            ("compression.lz4.level", ["1", "9", "17"], ["0", "18", "-1"]),
            (
                "compression.zstd.level",
                ["-131072", "3", "22"],
                ["-131073", "23", "x"],
            ),
        ] {
            for value in good {
                assert!(validate(name, value).is_ok(), "{name}={value}");
            }
            for value in bad {
                assert!(validate(name, value).is_err(), "{name}={value}");
            }
        }
        assert!(validate("message.timestamp.after.max.ms", "-1").is_err());
    }

    #[test]
    fn compression_and_timestamp_bounds_reach_the_log_config() {
        let broker = BrokerConfig::load(
            None,
            &[
                "compression.type=lz4".to_owned(),
                "compression.zstd.level=7".to_owned(),
            ],
        )
        .unwrap();
        let mut overrides = BTreeMap::new();
        let config = log_config(&overrides, &broker);
        assert_eq!(config.compression, TopicCompression::parse("lz4").unwrap());
        assert_eq!(config.compression_levels.zstd, 7);
        assert_eq!(config.message_timestamp_after_max_ms, 3_600_000);
        assert_eq!(config.message_timestamp_before_max_ms, i64::MAX);
        overrides.insert("compression.type".to_owned(), "producer".to_owned());
        overrides.insert(
            "message.timestamp.before.max.ms".to_owned(),
            "1000".to_owned(),
        );
        let config = log_config(&overrides, &broker);
        assert_eq!(config.compression, TopicCompression::Producer);
        assert_eq!(config.message_timestamp_before_max_ms, 1000);
    }
}
