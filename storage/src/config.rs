//! Per-log settings, in the units of Kafka's topic configs of the same names.

use crate::compression::{CompressionLevels, TopicCompression};

/// Settings of one partition log. The broker derives them from topic configs
/// (`segment.bytes`, `retention.ms`, `flush.messages`, ...) over broker defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment before the active one would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty active segment older than this.
    pub segment_ms: i64,
    /// `retention.bytes`: delete oldest sealed segments while the log is larger (-1: no limit).
    pub retention_bytes: i64,
    /// `retention.ms`: delete sealed segments whose newest record is older (-1: forever).
    pub retention_ms: i64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// `flush.messages`: fsync at least every this many records. 1 (Karst's default) means
    /// every append is synced before it is acknowledged or visible to consumers.
    pub flush_messages: i64,
    /// `flush.ms`: fsync at least this often when `flush.messages` > 1.
    pub flush_ms: i64,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type=LogAppendTime`.
    pub log_append_time: bool,
    /// `message.timestamp.before.max.ms`: a CreateTime record older than now minus this is
    /// refused with INVALID_TIMESTAMP (`i64::MAX`: no bound).
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: a CreateTime record newer than now plus this is
    /// refused with INVALID_TIMESTAMP (`i64::MAX`: no bound).
    pub message_timestamp_after_max_ms: i64,
    /// `compression.type`: the codec batches are stored in, or the producer's.
    pub compression: TopicCompression,
    /// `compression.gzip.level`, `compression.lz4.level`, `compression.zstd.level`.
    pub compression_levels: CompressionLevels,
    /// `cleanup.policy` holds `delete`: retention deletes old segments.
    pub cleanup_delete: bool,
    /// `cleanup.policy` holds `compact`: the cleaner keeps the latest record of each key.
    pub cleanup_compact: bool,
    /// `delete.retention.ms`: how long a tombstone stays after the cleaning that first kept it.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: the cleaner takes a log once this share of its cleanable
    /// bytes has not been cleaned yet.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: segments holding records newer than this are not cleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log whose oldest uncleaned record is older than this is
    /// cleaned whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `producer.id.expiration.ms` (a broker setting in Kafka): the producer state of a
    /// producer id whose newest batch is older than this is forgotten.
    pub producer_id_expiration_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4096,
            flush_messages: 1,
            flush_ms: i64::MAX,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: i64::MAX,
            compression: TopicCompression::Producer,
            compression_levels: CompressionLevels::default(),
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            producer_id_expiration_ms: 24 * 3600 * 1000,
        }
    }
}

impl LogConfig {
    /// True when appends must be synced before they are acknowledged.
    pub fn sync_before_ack(&self) -> bool {
        self.flush_messages <= 1
    }
}
