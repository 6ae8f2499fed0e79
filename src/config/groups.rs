//! The group coordinator's settings (`offsets.*`, `group.*`), typed, with Kafka's names and
//! defaults. The keys are declared with every other broker key in [`super::broker`]; this is
//! the coordinator's view of them.

use anyhow::bail;

use super::BrokerConfig;

/// What the group coordinator reads from the broker config.
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// `offsets.topic.num.partitions`: used when `__consumer_offsets` is created.
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.replication.factor`: capped by the live brokers at creation.
    pub offsets_topic_replication_factor: i16,
    /// `offsets.topic.segment.bytes`.
    pub offsets_topic_segment_bytes: i64,
    /// `offsets.commit.timeout.ms`: how long a group write waits for the ISR.
    pub commit_timeout_ms: u64,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: u64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_bytes_max: usize,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`.
    pub session_timeout_min_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_max_ms: i32,
    /// `group.max.size`.
    pub group_size_max: usize,
}

impl GroupOptions {
    pub fn from_broker(config: &BrokerConfig) -> anyhow::Result<GroupOptions> {
        let number = |name: &str| -> anyhow::Result<i64> {
            let value: i64 = config.value(name).trim().parse()?;
            if value < 0 {
                bail!("invalid value for config key `{name}`: must not be negative, got {value}");
            }
            Ok(value)
        };
        let positive = |name: &str| -> anyhow::Result<i64> {
            let value = number(name)?;
            if value == 0 {
                bail!("invalid value for config key `{name}`: must be positive");
            }
            Ok(value)
        };
        let options = GroupOptions {
            offsets_topic_partitions: positive("offsets.topic.num.partitions")? as i32,
            offsets_topic_replication_factor: positive("offsets.topic.replication.factor")?
                .min(i64::from(i16::MAX)) as i16,
            offsets_topic_segment_bytes: positive("offsets.topic.segment.bytes")?,
            commit_timeout_ms: positive("offsets.commit.timeout.ms")? as u64,
            offsets_retention_ms: positive("offsets.retention.minutes")?.saturating_mul(60_000),
            offsets_retention_check_interval_ms: positive("offsets.retention.check.interval.ms")?
                as u64,
            offset_metadata_bytes_max: number("offset.metadata.max.bytes")? as usize,
            initial_rebalance_delay_ms: number("group.initial.rebalance.delay.ms")?,
            session_timeout_min_ms: positive("group.min.session.timeout.ms")? as i32,
            session_timeout_max_ms: positive("group.max.session.timeout.ms")? as i32,
            group_size_max: positive("group.max.size")? as usize,
        };
        if options.session_timeout_min_ms > options.session_timeout_max_ms {
            bail!("group.min.session.timeout.ms is above group.max.session.timeout.ms");
        }
        Ok(options)
    }
}

impl Default for GroupOptions {
    /// Kafka's defaults.
    fn default() -> GroupOptions {
        GroupOptions::from_broker(
            &BrokerConfig::from_explicit(Default::default()).expect("the defaults are valid"),
        )
        .expect("the defaults are valid")
    }
}
