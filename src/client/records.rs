//! Records as the client sees them, and their conversion to and from record batches (magic 2).
//!
//! Producing encodes a list of [`ProducerRecord`]s into one batch with proto-kafka's
//! `RecordBatchEncoder` (no producer id: this client is not idempotent). Fetching decodes the
//! partition's `records` bytes batch by batch. A broker may cut the last batch short when it
//! hits the fetch size limit (Kafka does, by design); that partial batch is not an error, it is
//! simply fetched again from its first offset next time, so the decoder stops before it.

use bytes::{Buf, Bytes, BytesMut};
use proto_kafka::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};
use proto_kafka::ProtoError;

use proto_kafka::protocol::StrBytes;

/// Bytes in front of every batch that tell its length: base offset (8) + batch length (4).
const BATCH_LENGTH_PREFIX_BYTES: usize = 12;

/// Where the magic byte sits in a batch header.
const MAGIC_OFFSET: usize = 16;

/// Where the last offset delta sits: after base offset, length, leader epoch, magic, CRC and
/// attributes (8 + 4 + 4 + 1 + 4 + 2).
const LAST_OFFSET_DELTA_OFFSET: usize = 23;

/// The smallest valid batch: the fixed header of magic 2 with no records.
const BATCH_HEADER_BYTES: usize = 61;

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// The key; `None` is Kafka's null key.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers in order (keys may repeat).
    pub headers: Vec<(String, Option<Bytes>)>,
    /// The creation timestamp in ms since the epoch; `None` means now.
    pub timestamp_ms: Option<i64>,
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The record's offset in its partition.
    pub offset: i64,
    /// The timestamp in ms since the epoch.
    pub timestamp_ms: i64,
    /// Whether the timestamp is the producer's (create time) or the broker's (log append time).
    pub timestamp_type: TimestampType,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Encodes `records` as one record batch (magic 2) with `compression`.
///
/// Offsets inside the batch are relative (0, 1, ...): the broker assigns the real ones.
pub fn encode_batch(
    records: &[ProducerRecord],
    compression: Compression,
    now_ms: i64,
) -> Result<Bytes, ProtoError> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(index, record)| Record {
            transactional: false,
            control: false,
            delete_horizon_ms: None,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            sequence: NO_SEQUENCE,
            timestamp: record.timestamp_ms.unwrap_or(now_ms),
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record
                .headers
                .iter()
                .map(|(key, value)| (StrBytes::from_string(key.clone()), value.clone()))
                .collect(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buffer, &records, &options)?;
    Ok(buffer.freeze())
}

/// Decodes the complete batches in a fetch response's `records`, skipping control records
/// (transaction markers) and records before `fetch_offset` (a compressed batch is returned
/// whole even when the fetch starts in its middle).
///
/// Returns the records and the offset to fetch next: one past the last complete batch, which
/// also steps over batches that held only control records.
pub fn decode_fetched(
    mut records: Bytes,
    fetch_offset: i64,
) -> Result<(Vec<ConsumerRecord>, i64), ProtoError> {
    let mut decoded = Vec::new();
    let mut next_offset = fetch_offset;
    while records.len() >= BATCH_LENGTH_PREFIX_BYTES {
        let batch_length = (&records[8..12]).get_i32();
        let Ok(batch_length) = usize::try_from(batch_length) else {
            return Err(ProtoError::NegativeLength {
                field: "batch length",
                value: i64::from(batch_length),
            });
        };
        let batch_size = BATCH_LENGTH_PREFIX_BYTES + batch_length;
        if records.len() < batch_size {
            break; // a partial batch cut by the fetch size limit
        }
        let mut batch = records.split_to(batch_size);
        match batch.get(MAGIC_OFFSET).map(|&magic| magic as i8) {
            Some(2) => {}
            Some(version @ 0..=1) => {
                return Err(ProtoError::UnsupportedMessageSetVersion { version })
            }
            Some(version) => return Err(ProtoError::UnknownRecordBatchVersion { version }),
            None => {
                return Err(ProtoError::MalformedRecord {
                    detail: "batch without a magic byte",
                })
            }
        }
        if batch_size < BATCH_HEADER_BYTES {
            return Err(ProtoError::MalformedRecord {
                detail: "batch shorter than its header",
            });
        }
        let base_offset = (&batch[0..8]).get_i64();
        let last_offset_delta = (&batch[LAST_OFFSET_DELTA_OFFSET..]).get_i32();
        let set = RecordBatchDecoder::decode(&mut batch)?;
        for record in set.records {
            if record.control || record.offset < fetch_offset {
                continue;
            }
            decoded.push(ConsumerRecord {
                offset: record.offset,
                timestamp_ms: record.timestamp,
                timestamp_type: record.timestamp_type,
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|(key, value)| (key.to_string(), value))
                    .collect(),
            });
        }
        // The batch header's last offset, not the last record's: compaction may have removed
        // the batch's tail records, and a control batch has none we keep.
        next_offset = next_offset.max(base_offset + i64::from(last_offset_delta) + 1);
    }
    Ok((decoded, next_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &str) -> ProducerRecord {
        ProducerRecord {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: vec![("source".into(), Some(Bytes::from_static(b"test")))],
            timestamp_ms: None,
        }
    }

    /// Rewrites a batch's base offset the way a broker does when it appends it.
    fn at_base_offset(batch: Bytes, base_offset: i64) -> Bytes {
        let mut bytes = BytesMut::from(&batch[..]);
        bytes[..8].copy_from_slice(&base_offset.to_be_bytes());
        bytes.freeze()
    }

    #[test]
    fn an_encoded_batch_decodes_to_the_same_records_with_every_compression() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let produced = vec![record("k1", "v1"), record("k2", "v2"), record("k3", "v3")];
            let batch = encode_batch(&produced, compression, 1_700_000_000_000).unwrap();
            let (consumed, next_offset) = decode_fetched(batch, 0).unwrap();
            assert_eq!(next_offset, 3, "{compression:?}");
            let values: Vec<_> = consumed.iter().map(|r| r.value.clone().unwrap()).collect();
            assert_eq!(values, vec!["v1", "v2", "v3"], "{compression:?}");
            assert_eq!(consumed[1].key.as_deref(), Some(&b"k2"[..]));
            assert_eq!(consumed[2].offset, 2);
            assert_eq!(consumed[0].timestamp_ms, 1_700_000_000_000);
            assert_eq!(
                consumed[0].headers,
                vec![("source".into(), Some(Bytes::from_static(b"test")))]
            );
        }
    }

    #[test]
    fn a_partial_trailing_batch_is_left_for_the_next_fetch() {
        let first = at_base_offset(
            encode_batch(&[record("a", "1")], Compression::None, 0).unwrap(),
            10,
        );
        let second = at_base_offset(
            encode_batch(&[record("b", "2")], Compression::None, 0).unwrap(),
            11,
        );
        let mut fetched = BytesMut::from(&first[..]);
        fetched.extend_from_slice(&second[..second.len() - 5]);
        let (consumed, next_offset) = decode_fetched(fetched.freeze(), 10).unwrap();
        assert_eq!(consumed.len(), 1);
        assert_eq!(consumed[0].offset, 10);
        assert_eq!(next_offset, 11);
    }

    #[test]
    fn records_before_the_fetch_offset_are_skipped() {
        let batch = at_base_offset(
            encode_batch(
                &[record("a", "1"), record("b", "2"), record("c", "3")],
                Compression::Lz4,
                0,
            )
            .unwrap(),
            100,
        );
        let (consumed, next_offset) = decode_fetched(batch, 101).unwrap();
        let offsets: Vec<_> = consumed.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![101, 102]);
        assert_eq!(next_offset, 103);
    }

    #[test]
    fn empty_records_mean_nothing_new() {
        assert_eq!(decode_fetched(Bytes::new(), 42).unwrap(), (vec![], 42));
    }
}
