//! What a leader does to a producer's batches before it appends them, Kafka's LogValidator:
//! per-record checks that name the records at fault (KIP-467), LogAppendTime stamping, and
//! recompression into the topic's `compression.type`.
//!
//! It runs on the storage thread that owns the log (from `Log::plan`, before anything is
//! reserved), never on a network thread: decompressing and recompressing cost CPU that
//! would otherwise stall every connection a network thread serves. A batch is looked into
//! only when something needs its records: a compacted topic (keys), timestamp bounds
//! (`message.timestamp.before.max.ms` / `after.max.ms` below their unbounded defaults), a
//! producer that set LogAppendTime itself, or a codec other than the topic's. Any other
//! batch keeps the zero-copy path: its bytes are written as received, only the 17-byte
//! prefix rewritten (and, for LogAppendTime topics, the timestamp type, max timestamp and
//! CRC).
//!
//! A recompressed batch is rebuilt as Kafka's `buildRecordsAndAssignOffsets` does: the same
//! records (key, value, headers, timestamps) with offset deltas 0..n-1, the first record's
//! timestamp as base timestamp, the producer id, epoch, base sequence and transactional
//! flag kept, a new CRC; the broker's clock as max timestamp on LogAppendTime topics.
//!
//! Refusals are all or nothing per partition of a produce request: one bad record refuses
//! its batch and every batch sent with it, and nothing of them is stored.

use std::fmt;

use crate::batch::{
    header_with, seal, BatchError, BatchHeader, ValidBatch, BATCH_HEADER_BYTES, COMPRESSION_MASK,
    TIMESTAMP_TYPE_BIT,
};
use crate::compression::{self, Codec, DECOMPRESSED_BATCH_BYTES_MAX};
use crate::config::LogConfig;
use crate::record::{parse_records, write_reframed, RecordView};
use crate::types::TopicPartition;

/// A record timestamp of -1: the producer gave none. Never out of bounds.
const NO_TIMESTAMP: i64 = -1;

/// Record errors Kafka lists in its message before "...": the rest are only counted.
const RECORD_ERRORS_IN_MESSAGE_MAX: usize = 3;

/// Which Kafka error a record error maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordErrorKind {
    /// INVALID_RECORD: e.g. a record without a key on a compacted topic.
    InvalidRecord,
    /// INVALID_TIMESTAMP: a timestamp out of the topic's bounds, or a producer that set
    /// LogAppendTime.
    InvalidTimestamp,
}

/// One refused record: its index in its batch and why (a ProduceResponse `record_errors`
/// entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    pub batch_index: i32,
    pub message: String,
}

/// The records of one batch that were refused; the batch's partition answers with
/// [`RejectedRecords::kind`] and these entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedRecords {
    /// INVALID_TIMESTAMP if any record's timestamp was at fault, else INVALID_RECORD
    /// (Kafka's rule).
    pub kind: RecordErrorKind,
    pub errors: Vec<RecordError>,
}

impl fmt::Display for RejectedRecords {
    /// Kafka's wording, which clients show as the error message.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == RecordErrorKind::InvalidTimestamp {
            return formatter
                .write_str("One or more records have been rejected due to invalid timestamp");
        }
        let shown: Vec<String> = self
            .errors
            .iter()
            .take(RECORD_ERRORS_IN_MESSAGE_MAX)
            .map(|error| {
                format!(
                    "RecordError(batchIndex={}, message='{}')",
                    error.batch_index, error.message
                )
            })
            .collect();
        write!(
            formatter,
            "One or more records have been rejected due to {} record errors in total, and only \
             showing the first three errors at most: [{}]",
            self.errors.len(),
            shown.join(", ")
        )
    }
}

/// The per-record rules of one partition at one moment.
struct RecordRules<'a> {
    partition: &'a TopicPartition,
    keys_required: bool,
    log_append_time: bool,
    now_ms: i64,
    before_max_ms: i64,
    after_max_ms: i64,
}

impl RecordRules<'_> {
    /// Whether a batch with `header` must be opened to apply the rules.
    ///
    /// The future bound (`message.timestamp.after.max.ms`, one hour by default, so always
    /// set) is judged by the batch's max timestamp: only a batch whose max timestamp is past
    /// it is opened, to name its records. Opening every batch for it would cost the
    /// zero-copy path its point; a producer whose header understates its records' timestamps
    /// is not caught (Kafka, which opens every batch, would). The past bound
    /// (`message.timestamp.before.max.ms`, unbounded by default) has no header field to
    /// judge by: when set, every batch is opened.
    fn needs_records(&self, header: &BatchHeader) -> bool {
        let past_bounded = self.before_max_ms < i64::MAX;
        let future_exceeded = i128::from(header.max_timestamp) - i128::from(self.now_ms)
            > i128::from(self.after_max_ms);
        self.keys_required
            || header.uses_log_append_time()
            || (!self.log_append_time && (past_bounded || future_exceeded))
    }

    fn out_of_bounds(&self, timestamp: i64) -> bool {
        let behind = i128::from(self.now_ms) - i128::from(timestamp);
        behind > i128::from(self.before_max_ms) || -behind > i128::from(self.after_max_ms)
    }

    /// What is wrong with `record`, if anything: the key first, then the timestamp.
    fn record_error(
        &self,
        header: &BatchHeader,
        record: &RecordView<'_>,
    ) -> Option<(RecordErrorKind, String)> {
        if self.keys_required && record.key.is_none() {
            return Some((
                RecordErrorKind::InvalidRecord,
                format!(
                    "Compacted topic cannot accept message without key in topic partition {}",
                    self.partition
                ),
            ));
        }
        let timestamp = record.effective_timestamp(header);
        if !self.log_append_time && timestamp != NO_TIMESTAMP {
            return self.out_of_bounds(timestamp).then(|| {
                (
                    RecordErrorKind::InvalidTimestamp,
                    format!(
                        "Timestamp {timestamp} of message with offset {} is out of range. The \
                         timestamp should be within [{}, {}]",
                        record.offset,
                        self.now_ms.saturating_sub(self.before_max_ms),
                        self.now_ms.saturating_add(self.after_max_ms)
                    ),
                )
            });
        }
        header.uses_log_append_time().then(|| {
            (
                RecordErrorKind::InvalidTimestamp,
                format!(
                    "Invalid timestamp type in message with offset {}. Producer should not set \
                     timestamp type to LogAppendTime.",
                    record.offset
                ),
            )
        })
    }

    /// Every record error of a batch, or `Ok` when there is none.
    fn check(&self, header: &BatchHeader, records: &[RecordView<'_>]) -> Result<(), BatchError> {
        let mut kind = RecordErrorKind::InvalidRecord;
        let mut errors = Vec::new();
        for (index, record) in records.iter().enumerate() {
            if let Some((error_kind, message)) = self.record_error(header, record) {
                if error_kind == RecordErrorKind::InvalidTimestamp {
                    kind = error_kind;
                }
                errors.push(RecordError {
                    batch_index: index as i32,
                    message,
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(BatchError::Records(RejectedRecords { kind, errors }))
        }
    }
}

/// Checks and transforms the batches of one produce request for `partition` under `config`
/// at `now_ms`; what comes back is what the log appends. An error refuses them all.
pub fn prepare_produced(
    batches: Vec<ValidBatch>,
    config: &LogConfig,
    partition: &TopicPartition,
    now_ms: i64,
) -> Result<Vec<ValidBatch>, BatchError> {
    let rules = RecordRules {
        partition,
        keys_required: config.cleanup_compact,
        log_append_time: config.log_append_time,
        now_ms,
        before_max_ms: config.message_timestamp_before_max_ms,
        after_max_ms: config.message_timestamp_after_max_ms,
    };
    batches
        .into_iter()
        .map(|batch| prepare_batch(batch, &rules, config))
        .collect()
}

fn prepare_batch(
    mut batch: ValidBatch,
    rules: &RecordRules<'_>,
    config: &LogConfig,
) -> Result<ValidBatch, BatchError> {
    let codec_id = batch.header.compression_codec();
    let source = Codec::from_id(codec_id)
        .ok_or_else(|| BatchError::Corrupt(format!("unknown compression codec {codec_id}")))?;
    let target = config.compression.target_for(source);
    if target == source && !rules.needs_records(&batch.header) {
        if config.log_append_time {
            batch.stamp_log_append_time(rules.now_ms);
        }
        return Ok(batch);
    }
    let body = batch
        .bytes
        .slice(BATCH_HEADER_BYTES..batch.header.size_bytes);
    let data = compression::decompress(source, body, DECOMPRESSED_BATCH_BYTES_MAX)
        .map_err(|error| BatchError::Corrupt(error.to_string()))?;
    let records = parse_records(&data, &batch.header, batch.header.base_timestamp)
        .map_err(BatchError::Corrupt)?;
    rules.check(&batch.header, &records)?;
    if target == source {
        if config.log_append_time {
            batch.stamp_log_append_time(rules.now_ms);
        }
        return Ok(batch);
    }
    let rebuilt = rebuild(&batch, &records, target, config, rules.now_ms)?;
    if rebuilt.header.size_bytes > config.max_message_bytes {
        return Err(BatchError::TooLarge {
            size_bytes: rebuilt.header.size_bytes,
            limit_bytes: config.max_message_bytes,
        });
    }
    Ok(rebuilt)
}

/// `batch`'s records in a new batch compressed with `target` (see the module docs).
fn rebuild(
    batch: &ValidBatch,
    records: &[RecordView<'_>],
    target: Codec,
    config: &LogConfig,
    now_ms: i64,
) -> Result<ValidBatch, BatchError> {
    let base_timestamp = records
        .first()
        .map_or(batch.header.base_timestamp, |record| record.timestamp);
    let mut raw = Vec::with_capacity(data_capacity(records));
    for (index, record) in records.iter().enumerate() {
        let timestamp_delta = record.timestamp.wrapping_sub(base_timestamp);
        write_reframed(&mut raw, record, timestamp_delta, index as i64);
    }
    let compressed = compression::compress(target, &raw, &config.compression_levels)
        .map_err(|error| BatchError::Invalid(error.to_string()))?;
    let mut attributes =
        (batch.header.attributes & !COMPRESSION_MASK & !TIMESTAMP_TYPE_BIT) | target.id();
    let max_timestamp = if config.log_append_time {
        attributes |= TIMESTAMP_TYPE_BIT;
        now_ms
    } else {
        records
            .iter()
            .map(|record| record.timestamp)
            .max()
            .unwrap_or(NO_TIMESTAMP)
    };
    let mut bytes = header_with(
        &batch.bytes,
        attributes,
        base_timestamp,
        max_timestamp,
        records.len() as i32,
    );
    bytes.extend_from_slice(&compressed);
    let bytes = bytes::Bytes::from(seal(bytes));
    let header = BatchHeader::parse(&bytes).expect("a header the broker just wrote");
    Ok(ValidBatch { bytes, header })
}

fn data_capacity(records: &[RecordView<'_>]) -> usize {
    records.iter().map(|record| record.framed.len() + 8).sum()
}

#[cfg(test)]
#[path = "validator_tests.rs"]
mod tests;
