//! Broker configuration: `karst server --config FILE --set key=value`.
//!
//! The TOML file holds flat, quoted Kafka keys (`"log.retention.ms" = 604800000`). Values
//! given with `--set` override the file. Unknown keys and malformed values stop start-up with
//! a message naming the key: a misspelled durability or retention setting must never fall
//! back to a silent default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};

use super::ConfigType;

/// One broker key: name, type, default (as Kafka spells it), and what it does.
pub struct KeyDef {
    pub name: &'static str,
    pub kind: ConfigType,
    pub default: &'static str,
    pub doc: &'static str,
}

macro_rules! keys {
    ($($name:literal, $kind:ident, $default:literal, $doc:literal;)*) => {
        &[$(KeyDef { name: $name, kind: ConfigType::$kind, default: $default, doc: $doc },)*]
    };
}

/// Every broker key Karst accepts.
pub const BROKER_KEYS: &[KeyDef] = keys![
    "node.id", Int, "1", "This node's id.";
    "broker.id", Int, "1", "Alias of node.id (older Kafka name).";
    "process.roles", List, "broker,controller", "Roles of this node.";
    "cluster.id", String, "", "Cluster id; generated when the data directory is formatted.";
    "listeners", List, "PLAINTEXT://127.0.0.1:9092", "Listeners: PLAINTEXT://host:port for clients and, on nodes of a multi-node quorum, CONTROLLER://host:port for Raft and broker-to-controller calls.";
    "controller.listener.names", List, "CONTROLLER", "Name of the controller listener in listeners.";
    "controller.quorum.voters", List, "", "Voters as id@host:port (their controller listeners). Empty: a single-node quorum of this node.";
    "broker.rack", String, "", "Rack of this broker, for rack-aware replica placement.";
    "broker.session.timeout.ms", Int, "9000", "A broker without a heartbeat for this long is fenced by the controller.";
    "broker.heartbeat.interval.ms", Int, "2000", "How often a broker heartbeats to the controller.";
    "broker.fencing.connection.refused.ms", Int, "500", "Karst: a node whose controller listener has refused the active controller's Raft connections this long (its process is gone), and that has not heartbeated for as long, is fenced without waiting for broker.session.timeout.ms. A partitioned node refuses nothing and waits out the session. 0: only the session timeout fences.";
    "metadata.snapshot.interval.entries", Long, "10000", "Committed metadata log entries between snapshots of the metadata image.";
    "advertised.listeners", List, "", "Listeners given to clients; defaults to listeners.";
    "admin.listener", String, "127.0.0.1:9644", "HTTP address for /metrics and /health.";
    "log.dirs", List, "./karst-data", "Data directory (one).";
    "log.dir", String, "./karst-data", "Alias of log.dirs.";
    "num.partitions", Int, "1", "Default partition count of new topics.";
    "default.replication.factor", Int, "1", "Default replication factor of new topics.";
    "auto.create.topics.enable", Boolean, "true", "Create unknown topics on Metadata requests.";
    "delete.topic.enable", Boolean, "true", "Allow DeleteTopics.";
    "offsets.topic.num.partitions", Int, "50", "Partitions of __consumer_offsets, fixed when it is created on first use.";
    "offsets.topic.replication.factor", Int, "3", "Replication factor of __consumer_offsets; capped by the live brokers when it is created (with a warning), as Kafka does.";
    "offsets.topic.segment.bytes", Int, "104857600", "segment.bytes of __consumer_offsets.";
    "offsets.commit.timeout.ms", Int, "5000", "How long an offset commit or group write waits to be replicated to the ISR of its __consumer_offsets partition.";
    "offsets.retention.minutes", Int, "10080", "Committed offsets of a group without members are deleted this long after it became empty (or, for groups never managed by the coordinator, after the commit).";
    "offsets.retention.check.interval.ms", Long, "600000", "How often expired offsets are looked for.";
    "offset.metadata.max.bytes", Int, "4096", "Longest metadata string of an offset commit.";
    "group.initial.rebalance.delay.ms", Int, "3000", "How long the first rebalance of an empty group waits for more members to join (extended per joining member, up to the rebalance timeout).";
    "group.min.session.timeout.ms", Int, "6000", "Shortest session timeout a group member may ask for.";
    "group.max.session.timeout.ms", Int, "1800000", "Longest session timeout a group member may ask for.";
    "group.max.size", Int, "2147483647", "Most members in one group.";
    "min.insync.replicas", Int, "1", "Default min.insync.replicas of topics.";
    "log.segment.bytes", Int, "1073741824", "Default segment.bytes.";
    "log.roll.ms", Long, "604800000", "Default segment.ms.";
    "log.roll.hours", Int, "168", "Default segment.ms, in hours (log.roll.ms wins).";
    "log.retention.ms", Long, "604800000", "Default retention.ms.";
    "log.retention.minutes", Int, "10080", "Default retention.ms, in minutes.";
    "log.retention.hours", Int, "168", "Default retention.ms, in hours.";
    "log.retention.bytes", Long, "-1", "Default retention.bytes.";
    "log.retention.check.interval.ms", Long, "300000", "How often retention runs.";
    "log.index.interval.bytes", Int, "4096", "Default index.interval.bytes.";
    "log.flush.interval.messages", Long, "1", "Default flush.messages; 1 = fsync before acknowledging (Karst's default).";
    "log.flush.interval.ms", Long, "9223372036854775807", "Default flush.ms.";
    "log.flush.offset.checkpoint.interval.ms", Int, "60000", "How often recovery points are checkpointed.";
    "log.message.timestamp.type", String, "CreateTime", "Default message.timestamp.type.";
    "log.cleanup.policy", List, "delete", "Default cleanup.policy.";
    "log.cleaner.enable", Boolean, "true", "Run the log cleaner (compaction of cleanup.policy=compact topics).";
    "log.cleaner.dedupe.buffer.size", Long, "134217728", "Memory of the cleaner's key -> offset map: keys mapped per cleaning round.";
    "log.cleaner.io.max.bytes.per.second", Double, "1.7976931348623157E308", "Cleaner reads plus writes per second.";
    "log.cleaner.backoff.ms", Long, "15000", "Cleaner sleep when no log needs cleaning.";
    "log.cleaner.delete.retention.ms", Long, "86400000", "Default delete.retention.ms.";
    "log.cleaner.min.cleanable.ratio", Double, "0.5", "Default min.cleanable.dirty.ratio.";
    "log.cleaner.min.compaction.lag.ms", Long, "0", "Default min.compaction.lag.ms.";
    "log.cleaner.max.compaction.lag.ms", Long, "9223372036854775807", "Default max.compaction.lag.ms.";
    "message.max.bytes", Int, "1048588", "Default max.message.bytes.";
    "socket.request.max.bytes", Int, "104857600", "Largest request frame accepted.";
    "connections.max.idle.ms", Long, "600000", "Idle connections are closed after this.";
    "queued.max.request.bytes", Long, "536870912", "Bytes of requests in flight, all connections together.";
    "max.connections", Int, "10000", "Most client connections open at once.";
    "log.io.threads", Int, "2", "Storage threads (group commit).";
    "log.commit.queue.max.bytes", Long, "268435456", "Bytes of appends queued for the storage threads and not yet synced, all partitions together; a produce request waits (its connection reads nothing more) until its bytes fit, so acks=0 floods and timed-out produces get back pressure instead of unbounded memory. Not a Kafka key: Kafka appends to the page cache on the request thread and has no such queue.";
    "log.dir.min.free.bytes", Long, "268435456", "Appends are refused (KAFKA_STORAGE_ERROR, retriable) while the log directory's volume has less free space than this, keeping room for metadata, checkpoints and recovery; 0 turns the reserve off.";
    "log.io.backend", String, "auto", "auto (io_uring when the kernel allows it), io_uring, or portable (pwritev + fdatasync).";
    "max.incremental.fetch.session.cache.slots", Int, "1000", "Most incremental fetch sessions.";
    "fetch.zero.copy.enable", Boolean, "false", "Send fetched records with sendfile, without checking their CRC again, when they lie in bytes this process wrote or checked before; off, every batch served is read and CRC-checked, so a bit flipped on disk later is never served.";
    "compression.type", String, "producer", "Broker default compression.type: producer (batches stored as sent), uncompressed, gzip, snappy, lz4 or zstd (batches in another codec are recompressed).";
    "compression.gzip.level", Int, "-1", "Default compression.gzip.level (1-9, or -1 for zlib's default).";
    "compression.lz4.level", Int, "9", "Default compression.lz4.level (1-17).";
    "compression.zstd.level", Int, "3", "Default compression.zstd.level (-131072 to 22).";
    "log.message.timestamp.before.max.ms", Long, "9223372036854775807", "Default message.timestamp.before.max.ms: CreateTime records older than this are refused (INVALID_TIMESTAMP).";
    "log.message.timestamp.after.max.ms", Long, "3600000", "Default message.timestamp.after.max.ms: CreateTime records further than this in the future are refused (INVALID_TIMESTAMP).";
    "producer.id.expiration.ms", Int, "86400000", "Producer state of an idempotent producer id is forgotten this long after its newest batch.";
    "producer.id.expiration.check.interval.ms", Int, "600000", "How often expired producer ids are removed.";
    "unclean.leader.election.enable", Boolean, "false", "Default unclean.leader.election.enable.";
    "auto.leader.rebalance.enable", Boolean, "true", "The controller moves leadership back to preferred replicas that are alive and in sync.";
    "leader.imbalance.check.interval.seconds", Long, "300", "How often the controller checks for leaderships away from preferred replicas.";
    "replica.lag.time.max.ms", Long, "30000", "A follower that has not caught up with the leader's log end for this long leaves the ISR.";
    "replica.fetch.wait.max.ms", Int, "500", "Longest a follower's fetch waits at the leader for new records.";
    "replica.fetch.max.bytes", Int, "1048576", "Bytes a follower fetches per partition per request (at least one batch).";
    "replica.fetch.response.max.bytes", Int, "10485760", "Bytes a follower fetches per request, all partitions together.";
    "replica.fetch.backoff.ms", Int, "1000", "Pause of a follower's fetcher after an error from its leader.";
    "replica.high.watermark.checkpoint.interval.ms", Long, "5000", "How often high watermarks are checkpointed.";
];

/// Broker keys that are topic defaults with a value range, and the topic key whose
/// validation they share.
const TOPIC_DEFAULTS_CHECKED: [(&str, &str); 6] = [
    ("compression.type", "compression.type"),
    ("compression.gzip.level", "compression.gzip.level"),
    ("compression.lz4.level", "compression.lz4.level"),
    ("compression.zstd.level", "compression.zstd.level"),
    (
        "log.message.timestamp.before.max.ms",
        "message.timestamp.before.max.ms",
    ),
    (
        "log.message.timestamp.after.max.ms",
        "message.timestamp.after.max.ms",
    ),
];

pub fn key(name: &str) -> Option<&'static KeyDef> {
    BROKER_KEYS.iter().find(|k| k.name == name)
}

/// The broker's settings, typed. `explicit` keeps what the operator set, for DescribeConfigs.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub explicit: BTreeMap<String, String>,
    pub node_id: i32,
    pub cluster_id: Option<String>,
    pub listener: SocketAddr,
    /// Where the controller listener binds; port 0 when no CONTROLLER listener was
    /// configured (a single-node quorum needs no fixed address).
    pub controller_listener: SocketAddr,
    /// `host:port` other nodes reach this node's controller listener at.
    pub controller_advertised: Option<String>,
    pub roles_broker: bool,
    pub roles_controller: bool,
    /// `controller.quorum.voters`: id -> controller `host:port`. Empty: this node alone.
    pub voters: std::collections::BTreeMap<u64, String>,
    pub rack: Option<String>,
    pub broker_session_timeout_ms: u64,
    /// 0: off.
    pub broker_fencing_connection_refused_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    pub snapshot_interval_entries: u64,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub admin_listener: SocketAddr,
    pub log_dir: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub delete_topic_enable: bool,
    pub retention_check_interval_ms: u64,
    pub checkpoint_interval_ms: u64,
    pub socket_request_bytes_max: usize,
    pub connections_idle_ms: u64,
    pub queued_request_bytes_max: usize,
    pub connections_max: usize,
    pub storage_threads: usize,
    pub io_backend: karst_storage::io::BackendChoice,
    /// `log.dir.min.free.bytes`: the free-space reserve appends may not eat into.
    pub min_free_bytes: u64,
    /// `log.commit.queue.max.bytes`: the bound on bytes queued for the storage threads.
    pub commit_queue_bytes_max: usize,
    pub fetch_session_slots: usize,
    /// `log.cleaner.enable`.
    pub cleaner_enabled: bool,
    /// `log.cleaner.*` settings of the cleaner thread.
    pub cleaner: karst_storage::CleanerOptions,
    pub fetch_zero_copy: bool,
    /// `replica.*` settings: follower fetching and ISR membership.
    pub replication: ReplicationOptions,
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_interval_ms: u64,
    /// `producer.id.expiration.ms`: idle producer ids' state is forgotten after this.
    pub producer_id_expiration_ms: i64,
    /// `producer.id.expiration.check.interval.ms`.
    pub producer_id_expiration_check_interval_ms: u64,
}

/// How followers fetch and when they leave the ISR (`replica.*` keys, Kafka's meanings).
#[derive(Clone, Debug)]
pub struct ReplicationOptions {
    pub lag_time_max_ms: u64,
    pub fetch_wait_max_ms: i32,
    pub fetch_partition_bytes_max: i32,
    pub fetch_response_bytes_max: i32,
    pub fetch_backoff_ms: u64,
    pub high_watermark_checkpoint_interval_ms: u64,
}

impl BrokerConfig {
    /// Reads the optional TOML file, applies `--set` pairs, validates everything.
    pub fn load(file: Option<&std::path::Path>, sets: &[String]) -> anyhow::Result<BrokerConfig> {
        let mut explicit = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let table: toml::Table = text
                .parse()
                .with_context(|| format!("parsing config file {}", path.display()))?;
            for (name, value) in table {
                let value = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(","),
                    other => bail!(
                        "config key `{name}` in {}: unsupported value {other}",
                        path.display()
                    ),
                };
                explicit.insert(name, value);
            }
        }
        for pair in sets {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| anyhow!("--set expects key=value, got `{pair}`"))?;
            explicit.insert(name.trim().to_owned(), value.trim().to_owned());
        }
        Self::from_explicit(explicit)
    }

    pub fn from_explicit(explicit: BTreeMap<String, String>) -> anyhow::Result<BrokerConfig> {
        for (name, value) in &explicit {
            let Some(def) = key(name) else {
                bail!("unknown config key `{name}` (Karst uses Kafka's key names; see docs/CONFIG.md)");
            };
            def.kind
                .check(value)
                .map_err(|problem| anyhow!("invalid value for config key `{name}`: {problem}"))?;
        }
        let config = BrokerConfig::typed(explicit)?;
        Ok(config)
    }

    /// The effective string value of a key: explicit, else default.
    pub fn value(&self, name: &str) -> String {
        self.explicit
            .get(name)
            .cloned()
            .or_else(|| key(name).map(|k| k.default.to_owned()))
            .unwrap_or_default()
    }

    fn long(&self, name: &str) -> i64 {
        self.value(name)
            .trim()
            .parse()
            .expect("validated against its type")
    }

    fn int_key(explicit: &BTreeMap<String, String>, name: &str) -> i64 {
        explicit
            .get(name)
            .map(String::as_str)
            .or_else(|| key(name).map(|k| k.default))
            .and_then(|v| v.trim().parse().ok())
            .expect("validated against its type")
    }

    fn typed(explicit: BTreeMap<String, String>) -> anyhow::Result<BrokerConfig> {
        let get = |name: &str| {
            explicit
                .get(name)
                .cloned()
                .unwrap_or_else(|| key(name).expect("declared").default.to_owned())
        };
        let positive = |name: &str| -> anyhow::Result<i64> {
            let value = Self::int_key(&explicit, name);
            if value <= 0 {
                bail!("invalid value for config key `{name}`: must be positive, got {value}");
            }
            Ok(value)
        };
        let non_negative = |name: &str| -> anyhow::Result<i64> {
            let value = Self::int_key(&explicit, name);
            if value < 0 {
                bail!("invalid value for config key `{name}`: must not be negative, got {value}");
            }
            Ok(value)
        };
        let node_id = if explicit.contains_key("node.id") || !explicit.contains_key("broker.id") {
            Self::int_key(&explicit, "node.id")
        } else {
            Self::int_key(&explicit, "broker.id")
        } as i32;
        let controller_name = get("controller.listener.names").trim().to_owned();
        let listeners: Vec<(String, String)> = get("listeners")
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| match entry.split_once("://") {
                Some((name, _)) => Ok((name.to_owned(), entry.to_owned())),
                None => Err(anyhow!(
                    "invalid value for config key `listeners`: `{entry}` is not NAME://host:port"
                )),
            })
            .collect::<anyhow::Result<_>>()?;
        for (name, _) in &listeners {
            if name != "PLAINTEXT" && *name != controller_name {
                bail!("invalid value for config key `listeners`: listener `{name}` is neither PLAINTEXT nor the controller listener `{controller_name}` (TLS and SASL are not supported yet)");
            }
        }
        let listener_text = listeners
            .iter()
            .find(|(name, _)| name == "PLAINTEXT")
            .map(|(_, text)| text.clone())
            .ok_or_else(|| {
                anyhow!("invalid value for config key `listeners`: no PLAINTEXT listener")
            })?;
        let listener = parse_listener(&listener_text)
            .with_context(|| "invalid value for config key `listeners`")?;
        let controller_text = listeners
            .iter()
            .find(|(name, _)| *name == controller_name)
            .map(|(_, text)| text.replacen(&format!("{controller_name}://"), "PLAINTEXT://", 1));
        let (controller_listener, controller_advertised) = match &controller_text {
            Some(text) => {
                let address = parse_listener(text).with_context(|| {
                    "invalid value for config key `listeners` (controller listener)"
                })?;
                let (host, port) = parse_host_port(text)?;
                let host = if host.is_empty() || host == "0.0.0.0" {
                    "127.0.0.1".to_owned()
                } else {
                    host
                };
                (address, Some(format!("{host}:{port}")))
            }
            None => (SocketAddr::from(([127, 0, 0, 1], 0)), None),
        };
        let roles = get("process.roles");
        let roles: Vec<&str> = roles.split(',').map(str::trim).collect();
        if let Some(bad) = roles
            .iter()
            .find(|r| !matches!(**r, "broker" | "controller"))
        {
            bail!(
                "invalid value for config key `process.roles`: `{bad}` is not broker or controller"
            );
        }
        let voters = parse_voters(&get("controller.quorum.voters"))?;
        if !voters.is_empty() && controller_text.is_none() {
            bail!("invalid value for config key `listeners`: controller.quorum.voters is set, so a `{controller_name}://host:port` listener is required");
        }
        if roles.contains(&"controller")
            && !voters.is_empty()
            && !voters.contains_key(&(node_id as u64))
        {
            bail!("invalid value for config key `controller.quorum.voters`: this node ({node_id}) has the controller role but is not a voter");
        }
        if !roles.contains(&"controller") && voters.is_empty() {
            bail!("invalid value for config key `controller.quorum.voters`: a broker-only node needs the voters to find the controller");
        }
        let advertised_text = match get("advertised.listeners") {
            text if text.is_empty() => listener_text.clone(),
            text => text.split(',').next().unwrap_or_default().trim().to_owned(),
        };
        let (advertised_host, advertised_port) = parse_host_port(&advertised_text)
            .with_context(|| "invalid value for config key `advertised.listeners`")?;
        let admin_listener: SocketAddr = get("admin.listener")
            .parse()
            .map_err(|error| anyhow!("invalid value for config key `admin.listener`: {error}"))?;
        let log_dir = if explicit.contains_key("log.dirs") || !explicit.contains_key("log.dir") {
            get("log.dirs")
        } else {
            get("log.dir")
        };
        if log_dir.contains(',') {
            bail!("invalid value for config key `log.dirs`: Karst supports one log directory, got `{log_dir}`");
        }
        let timestamp_type = get("log.message.timestamp.type");
        if !matches!(timestamp_type.as_str(), "CreateTime" | "LogAppendTime") {
            bail!("invalid value for config key `log.message.timestamp.type`: `{timestamp_type}` is not CreateTime or LogAppendTime");
        }
        // Defaults of topic configs are checked as the topic values would be.
        for (broker_key, topic_key) in TOPIC_DEFAULTS_CHECKED {
            super::topic::validate(topic_key, &get(broker_key)).map_err(|problem| {
                anyhow!("invalid value for config key `{broker_key}`: {problem}")
            })?;
        }
        let replication = positive("default.replication.factor")?;
        let io_backend = get("log.io.backend").parse().map_err(|problem| {
            anyhow!("invalid value for config key `log.io.backend`: {problem}")
        })?;
        let cluster_id = Some(get("cluster.id")).filter(|id| !id.is_empty());
        Ok(BrokerConfig {
            node_id,
            cluster_id,
            listener,
            controller_listener,
            controller_advertised,
            roles_broker: roles.contains(&"broker"),
            roles_controller: roles.contains(&"controller"),
            voters,
            rack: Some(get("broker.rack")).filter(|rack| !rack.is_empty()),
            broker_session_timeout_ms: positive("broker.session.timeout.ms")? as u64,
            broker_fencing_connection_refused_ms: non_negative(
                "broker.fencing.connection.refused.ms",
            )? as u64,
            broker_heartbeat_interval_ms: positive("broker.heartbeat.interval.ms")? as u64,
            snapshot_interval_entries: positive("metadata.snapshot.interval.entries")? as u64,
            advertised_host,
            advertised_port: if advertised_port == 0 {
                listener.port()
            } else {
                advertised_port
            },
            admin_listener,
            log_dir: PathBuf::from(log_dir.trim()),
            num_partitions: positive("num.partitions")? as i32,
            default_replication_factor: replication as i16,
            auto_create_topics: get("auto.create.topics.enable") == "true",
            delete_topic_enable: get("delete.topic.enable") == "true",
            retention_check_interval_ms: positive("log.retention.check.interval.ms")? as u64,
            checkpoint_interval_ms: positive("log.flush.offset.checkpoint.interval.ms")? as u64,
            socket_request_bytes_max: positive("socket.request.max.bytes")? as usize,
            connections_idle_ms: positive("connections.max.idle.ms")? as u64,
            queued_request_bytes_max: positive("queued.max.request.bytes")? as usize,
            connections_max: positive("max.connections")? as usize,
            storage_threads: positive("log.io.threads")? as usize,
            io_backend,
            min_free_bytes: non_negative("log.dir.min.free.bytes")? as u64,
            commit_queue_bytes_max: positive("log.commit.queue.max.bytes")? as usize,
            fetch_session_slots: Self::int_key(
                &explicit,
                "max.incremental.fetch.session.cache.slots",
            )
            .max(0) as usize,
            fetch_zero_copy: get("fetch.zero.copy.enable") == "true",
            auto_leader_rebalance: get("auto.leader.rebalance.enable") == "true",
            leader_imbalance_check_interval_ms: positive("leader.imbalance.check.interval.seconds")?
                as u64
                * 1000,
            replication: ReplicationOptions {
                lag_time_max_ms: positive("replica.lag.time.max.ms")? as u64,
                fetch_wait_max_ms: non_negative("replica.fetch.wait.max.ms")? as i32,
                fetch_partition_bytes_max: positive("replica.fetch.max.bytes")? as i32,
                fetch_response_bytes_max: positive("replica.fetch.response.max.bytes")? as i32,
                fetch_backoff_ms: non_negative("replica.fetch.backoff.ms")? as u64,
                high_watermark_checkpoint_interval_ms: positive(
                    "replica.high.watermark.checkpoint.interval.ms",
                )? as u64,
            },
            cleaner_enabled: get("log.cleaner.enable") == "true",
            cleaner: cleaner_options(&get)?,
            producer_id_expiration_ms: positive("producer.id.expiration.ms")?,
            producer_id_expiration_check_interval_ms: positive(
                "producer.id.expiration.check.interval.ms",
            )? as u64,
            explicit,
        })
    }

    /// The broker-level default of a topic config, with the broker key it came from when
    /// the operator set one: `(value, Some(broker key))` or `(value, None)` for built-in.
    pub fn topic_default(&self, broker_keys: &[&str]) -> (String, Option<&'static str>) {
        for name in broker_keys {
            if self.explicit.contains_key(*name) {
                let def = key(name).expect("declared");
                let value = self.value(name);
                // Unit conversion for the hours/minutes aliases.
                let value = match *name {
                    "log.retention.hours" | "log.roll.hours" => {
                        (self.long(name) * 3_600_000).to_string()
                    }
                    "log.retention.minutes" => (self.long(name) * 60_000).to_string(),
                    _ => value,
                };
                return (value, Some(def.name));
            }
        }
        let first = broker_keys.first().and_then(|n| key(n)).expect("declared");
        (first.default.to_owned(), None)
    }
}

/// The cleaner's settings from the `log.cleaner.*` keys.
fn cleaner_options(get: &dyn Fn(&str) -> String) -> anyhow::Result<karst_storage::CleanerOptions> {
    let number = |name: &str| -> anyhow::Result<f64> {
        let value: f64 = get(name)
            .trim()
            .parse()
            .expect("validated against its type");
        if value.is_nan() || value <= 0.0 {
            bail!("invalid value for config key `{name}`: must be positive, got {value}");
        }
        Ok(value)
    };
    Ok(karst_storage::CleanerOptions {
        dedupe_buffer_bytes: number("log.cleaner.dedupe.buffer.size")? as usize,
        io_bytes_per_second_max: number("log.cleaner.io.max.bytes.per.second")?,
        backoff_ms: number("log.cleaner.backoff.ms")? as u64,
    })
}

/// `controller.quorum.voters`: `id@host:port,...`.
fn parse_voters(text: &str) -> anyhow::Result<std::collections::BTreeMap<u64, String>> {
    let mut voters = std::collections::BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let invalid = || {
            anyhow!("invalid value for config key `controller.quorum.voters`: `{entry}` is not id@host:port")
        };
        let (id, address) = entry.split_once('@').ok_or_else(invalid)?;
        let id: u64 = id.parse().map_err(|_| invalid())?;
        let (_, port) = address.rsplit_once(':').ok_or_else(invalid)?;
        port.parse::<u16>().map_err(|_| invalid())?;
        if voters.insert(id, address.to_owned()).is_some() {
            bail!("invalid value for config key `controller.quorum.voters`: voter {id} is listed twice");
        }
    }
    Ok(voters)
}

fn parse_host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let address = text
        .strip_prefix("PLAINTEXT://")
        .ok_or_else(|| anyhow!("`{text}`: only PLAINTEXT://host:port listeners are supported"))?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("`{text}`: expected PLAINTEXT://host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|error| anyhow!("`{text}`: bad port: {error}"))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

fn parse_listener(text: &str) -> anyhow::Result<SocketAddr> {
    let (host, port) = parse_host_port(text)?;
    let host = if host.is_empty() {
        "0.0.0.0".to_owned()
    } else {
        host
    };
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .map_err(|error| anyhow!("`{text}`: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(pairs: &[&str]) -> Vec<String> {
        pairs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_arguments_give_a_single_node_on_the_default_port() {
        let config = BrokerConfig::load(None, &[]).unwrap();
        assert_eq!(config.listener.to_string(), "127.0.0.1:9092");
        assert_eq!(config.log_dir, PathBuf::from("./karst-data"));
        assert_eq!(config.node_id, 1);
    }

    #[test]
    fn a_misspelled_key_is_refused_by_name() {
        let error = BrokerConfig::load(None, &sets(&["log.retention.hourz=5"])).unwrap_err();
        assert!(
            error.to_string().contains("`log.retention.hourz`"),
            "{error}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused_by_name() {
        let error = BrokerConfig::load(None, &sets(&["num.partitions=many"])).unwrap_err();
        assert!(error.to_string().contains("`num.partitions`"), "{error}");
    }

    #[test]
    fn the_toml_file_and_set_overrides_combine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("karst.toml");
        std::fs::write(&path, "\"num.partitions\" = 3\n\"log.dirs\" = \"/tmp/x\"\n").unwrap();
        let config = BrokerConfig::load(Some(&path), &sets(&["num.partitions=6"])).unwrap();
        assert_eq!(config.num_partitions, 6);
        assert_eq!(config.log_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn hour_aliases_become_milliseconds_for_topic_defaults() {
        let config = BrokerConfig::load(None, &sets(&["log.retention.hours=2"])).unwrap();
        let (value, source) = config.topic_default(&[
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        ]);
        assert_eq!(value, "7200000");
        assert_eq!(source, Some("log.retention.hours"));
    }
}
