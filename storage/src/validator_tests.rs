//! The produce validator, specified batch by batch: which records are refused and why, and
//! what a recompressed batch holds.

use bytes::{Bytes, BytesMut};
use proto_kafka::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;
use crate::batch::{crc_matches, validate_produced};
use crate::compression::TopicCompression;

const NOW_MS: i64 = 1_700_000_000_000;
const HOUR_MS: i64 = 3_600_000;

fn partition() -> TopicPartition {
    TopicPartition::new("orders", 0)
}

/// An idempotent producer's batch of `keys.len()` records (value "value-<index>", one
/// header, timestamps a second apart starting an hour ago).
fn produced(keys: &[Option<&str>], compression: Compression) -> ValidBatch {
    let records: Vec<Record> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| Record {
            transactional: false,
            control: false,
            delete_horizon_ms: None,
            partition_leader_epoch: -1,
            producer_id: 7,
            producer_epoch: 2,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            sequence: 40 + index as i32,
            timestamp: NOW_MS - HOUR_MS + 1000 * index as i64,
            key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::from(format!("value-{index}"))),
            headers: [(
                proto_kafka::protocol::StrBytes::from_static_str("trace"),
                Some(Bytes::from_static(b"abc")),
            )]
            .into_iter()
            .collect(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buffer, &records, &options).unwrap();
    let mut batches = validate_produced(&buffer.freeze(), 1 << 20).unwrap();
    assert_eq!(batches.len(), 1, "one batch");
    batches.remove(0)
}

fn decoded(batch: &ValidBatch) -> Vec<Record> {
    let mut bytes = batch.bytes.clone();
    RecordBatchDecoder::decode(&mut bytes).unwrap().records
}

fn prepare(batch: ValidBatch, config: &LogConfig) -> Result<ValidBatch, BatchError> {
    let mut prepared = prepare_produced(vec![batch], config, &partition(), NOW_MS)?;
    Ok(prepared.remove(0))
}

fn rejected(outcome: Result<ValidBatch, BatchError>) -> RejectedRecords {
    match outcome {
        Err(BatchError::Records(rejected)) => rejected,
        other => panic!("expected record errors, got {other:?}"),
    }
}

const EVERY_COMPRESSION: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

#[test]
fn a_compacted_topic_refuses_exactly_the_keyless_records() {
    let config = LogConfig {
        cleanup_compact: true,
        ..LogConfig::default()
    };
    for compression in EVERY_COMPRESSION {
        let keys: Vec<Option<&str>> = (0..20)
            .map(|index| (index % 7 != 3).then_some("key"))
            .collect();
        let rejected = rejected(prepare(produced(&keys, compression), &config));
        assert_eq!(
            rejected.kind,
            RecordErrorKind::InvalidRecord,
            "{compression:?}"
        );
        let indexes: Vec<i32> = rejected.errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, vec![3, 10, 17], "{compression:?}");
        assert_eq!(
            rejected.errors[0].message,
            "Compacted topic cannot accept message without key in topic partition orders-0"
        );
        let message = rejected.to_string();
        assert!(
            message.starts_with("One or more records have been rejected due to 3 record errors"),
            "{message}"
        );

        let keyed = produced(&[Some("a"), Some("b")], compression);
        let kept = prepare(keyed.clone(), &config).unwrap();
        assert_eq!(
            kept.bytes, keyed.bytes,
            "{compression:?}: a valid batch is kept as sent"
        );
    }
}

#[test]
fn timestamps_outside_the_topic_bounds_are_invalid_timestamps() {
    // Record i is HOUR_MS - 1000 i old: with HOUR_MS - 2500 allowed, records 0, 1, 2 are
    // too old.
    let config = LogConfig {
        message_timestamp_before_max_ms: HOUR_MS - 2500,
        ..LogConfig::default()
    };
    for compression in EVERY_COMPRESSION {
        let batch = produced(&[Some("k"); 5], compression);
        let rejected = rejected(prepare(batch, &config));
        assert_eq!(
            rejected.kind,
            RecordErrorKind::InvalidTimestamp,
            "{compression:?}"
        );
        let indexes: Vec<i32> = rejected.errors.iter().map(|e| e.batch_index).collect();
        assert_eq!(indexes, vec![0, 1, 2], "{compression:?}");
        assert_eq!(
            rejected.to_string(),
            "One or more records have been rejected due to invalid timestamp"
        );
    }
    let future = LogConfig {
        message_timestamp_after_max_ms: 0,
        ..LogConfig::default()
    };
    let later = prepare_produced(
        vec![produced(&[Some("k")], Compression::None)],
        &future,
        &partition(),
        NOW_MS - 2 * HOUR_MS,
    );
    assert!(matches!(later, Err(BatchError::Records(_))), "{later:?}");
}

#[test]
fn log_append_time_topics_ignore_timestamp_bounds_and_stamp_the_batch() {
    let config = LogConfig {
        log_append_time: true,
        message_timestamp_before_max_ms: 0,
        ..LogConfig::default()
    };
    let batch = prepare(produced(&[Some("k"), None], Compression::Lz4), &config).unwrap();
    assert!(batch.header.uses_log_append_time());
    assert_eq!(batch.header.max_timestamp, NOW_MS);
    assert!(crc_matches(&batch.bytes, &batch.header));
}

#[test]
fn a_producer_may_not_set_log_append_time() {
    // On a LogAppendTime topic every record of such a batch is refused (Kafka's rule; on a
    // CreateTime topic the batch's max timestamp is checked against the bounds instead).
    let config = LogConfig {
        log_append_time: true,
        ..LogConfig::default()
    };
    let mut batch = produced(&[Some("k"), Some("l")], Compression::None);
    batch.stamp_log_append_time(NOW_MS);
    let rejected = rejected(prepare(batch, &config));
    assert_eq!(rejected.kind, RecordErrorKind::InvalidTimestamp);
    let indexes: Vec<i32> = rejected.errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(indexes, vec![0, 1]);
}

#[test]
fn recompression_keeps_every_record_and_the_producer_fields() {
    let config = LogConfig {
        compression: TopicCompression::Codec(Codec::Zstd),
        ..LogConfig::default()
    };
    for compression in EVERY_COMPRESSION {
        let original = produced(&[Some("a"), None, Some("c")], compression);
        let stored = prepare(original.clone(), &config).unwrap();
        assert_eq!(
            stored.header.compression_codec(),
            Codec::Zstd.id(),
            "{compression:?}"
        );
        assert!(crc_matches(&stored.bytes, &stored.header));
        for field in [
            |h: &BatchHeader| h.producer_id,
            |h: &BatchHeader| i64::from(h.producer_epoch),
            |h: &BatchHeader| i64::from(h.base_sequence),
            |h: &BatchHeader| i64::from(h.last_offset_delta),
            |h: &BatchHeader| h.base_timestamp,
            |h: &BatchHeader| h.max_timestamp,
        ] {
            assert_eq!(
                field(&stored.header),
                field(&original.header),
                "{compression:?}"
            );
        }
        let before = decoded(&original);
        let after = decoded(&stored);
        assert_eq!(after.len(), before.len());
        for (old, new) in before.iter().zip(&after) {
            assert_eq!(
                (
                    &new.key,
                    &new.value,
                    &new.headers,
                    new.timestamp,
                    new.offset
                ),
                (
                    &old.key,
                    &old.value,
                    &old.headers,
                    old.timestamp,
                    old.offset
                ),
                "{compression:?}"
            );
        }
    }
}

#[test]
fn the_producers_codec_keeps_the_batch_byte_for_byte() {
    for compression in EVERY_COMPRESSION {
        let original = produced(&[Some("a"), Some("b")], compression);
        let stored = prepare(original.clone(), &LogConfig::default()).unwrap();
        assert_eq!(stored.bytes, original.bytes, "{compression:?}");
        assert_eq!(
            stored.bytes.as_ptr(),
            original.bytes.as_ptr(),
            "{compression:?}: not even copied"
        );
    }
}

#[test]
fn recompressing_into_a_log_append_time_topic_stamps_the_new_batch() {
    let config = LogConfig {
        compression: TopicCompression::Codec(Codec::Gzip),
        log_append_time: true,
        ..LogConfig::default()
    };
    let stored = prepare(produced(&[Some("a")], Compression::Snappy), &config).unwrap();
    assert_eq!(stored.header.compression_codec(), Codec::Gzip.id());
    assert!(stored.header.uses_log_append_time());
    assert_eq!(stored.header.max_timestamp, NOW_MS);
    assert!(crc_matches(&stored.bytes, &stored.header));
}

#[test]
fn a_batch_that_grows_past_max_message_bytes_when_decompressed_is_too_large() {
    let keys: Vec<Option<&str>> = vec![Some("the same key, again and again"); 200];
    let original = produced(&keys, Compression::Zstd);
    let config = LogConfig {
        compression: TopicCompression::Codec(Codec::None),
        max_message_bytes: original.header.size_bytes * 2,
        ..LogConfig::default()
    };
    let outcome = prepare(original, &config);
    assert!(
        matches!(outcome, Err(BatchError::TooLarge { .. })),
        "{outcome:?}"
    );
}
