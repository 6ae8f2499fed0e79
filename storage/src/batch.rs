//! Record batches (magic 2) as bytes: header access, validation of what producers send,
//! and the in-place rewrite of base offset and partition leader epoch on append.
//!
//! Batches are stored byte-for-byte as produced unless the topic asks otherwise
//! (LogAppendTime, or a `compression.type` other than the batch's codec: see
//! [`crate::validator`]). Only the first 17 bytes (base offset, length, partition leader
//! epoch, magic) change on append, and none of them is covered by the CRC (which starts at
//! byte 21), so the producer's CRC stays valid on disk.

use bytes::Bytes;

use crate::types::{LeaderEpoch, Offset};
use crate::validator::RejectedRecords;

/// Bytes before the first record of a batch.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes of `baseOffset` + `batchLength`: the part of the header outside `batchLength`.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The rewritten prefix: base offset, length, partition leader epoch, magic.
pub const REWRITTEN_PREFIX_BYTES: usize = 17;
/// The only record batch format this broker stores.
pub const CURRENT_MAGIC: i8 = 2;

pub(crate) const LENGTH_OFFSET: usize = 8;
pub(crate) const LEADER_EPOCH_OFFSET: usize = 12;
pub(crate) const MAGIC_OFFSET: usize = 16;
pub(crate) const CRC_OFFSET: usize = 17;
pub(crate) const ATTRIBUTES_OFFSET: usize = 21;
pub(crate) const LAST_OFFSET_DELTA_OFFSET: usize = 23;
pub(crate) const BASE_TIMESTAMP_OFFSET: usize = 27;
pub(crate) const MAX_TIMESTAMP_OFFSET: usize = 35;
pub(crate) const PRODUCER_ID_OFFSET: usize = 43;
pub(crate) const PRODUCER_EPOCH_OFFSET: usize = 51;
pub(crate) const BASE_SEQUENCE_OFFSET: usize = 53;
pub(crate) const RECORDS_COUNT_OFFSET: usize = 57;

pub(crate) const COMPRESSION_MASK: i16 = 0x07;
pub(crate) const TIMESTAMP_TYPE_BIT: i16 = 0x08;
pub(crate) const TRANSACTIONAL_BIT: i16 = 0x10;
pub(crate) const CONTROL_BIT: i16 = 0x20;
/// Set by log compaction (KIP-534): the base timestamp holds the batch's delete horizon.
pub(crate) const DELETE_HORIZON_BIT: i16 = 0x40;

/// Why a batch sent by a producer was refused. Mapped to Kafka error codes by the broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Framing or checksum damage: Kafka's CORRUPT_MESSAGE.
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// Well-formed but not acceptable: Kafka's INVALID_RECORD.
    #[error("invalid record batch: {0}")]
    Invalid(String),
    /// Some records are not acceptable (KIP-467): INVALID_RECORD or INVALID_TIMESTAMP, with
    /// the records named.
    #[error("{0}")]
    Records(RejectedRecords),
    /// Larger than `max.message.bytes`: Kafka's MESSAGE_TOO_LARGE.
    #[error("record batch of {size_bytes} bytes exceeds max.message.bytes {limit_bytes}")]
    TooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
}

fn read_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// A read-only view of one complete batch's header fields.
#[derive(Clone, Copy, Debug)]
pub struct BatchHeader {
    pub base_offset: Offset,
    /// Total size on disk: `LOG_OVERHEAD_BYTES + batchLength`.
    pub size_bytes: usize,
    pub leader_epoch: LeaderEpoch,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Sequence number of the first record (-1 without a producer id).
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `bytes`, or `None` if fewer than a header's bytes
    /// are there or the length field is impossible. Does not check the CRC.
    pub fn parse(bytes: &[u8]) -> Option<BatchHeader> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return None;
        }
        let batch_length = read_i32(bytes, LENGTH_OFFSET);
        let minimum = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
        if batch_length < minimum {
            return None;
        }
        Some(BatchHeader {
            base_offset: Offset(read_i64(bytes, 0)),
            size_bytes: LOG_OVERHEAD_BYTES + batch_length as usize,
            leader_epoch: LeaderEpoch(read_i32(bytes, LEADER_EPOCH_OFFSET)),
            magic: bytes[MAGIC_OFFSET] as i8,
            crc: u32::from_be_bytes(bytes[CRC_OFFSET..CRC_OFFSET + 4].try_into().expect("4")),
            attributes: read_i16(bytes, ATTRIBUTES_OFFSET),
            last_offset_delta: read_i32(bytes, LAST_OFFSET_DELTA_OFFSET),
            base_timestamp: read_i64(bytes, BASE_TIMESTAMP_OFFSET),
            max_timestamp: read_i64(bytes, MAX_TIMESTAMP_OFFSET),
            producer_id: read_i64(bytes, PRODUCER_ID_OFFSET),
            producer_epoch: read_i16(bytes, PRODUCER_EPOCH_OFFSET),
            base_sequence: read_i32(bytes, BASE_SEQUENCE_OFFSET),
            records_count: read_i32(bytes, RECORDS_COUNT_OFFSET),
        })
    }

    /// The offset of the last record in the batch.
    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(i64::from(self.last_offset_delta))
    }

    /// The offset after the batch.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }

    pub fn compression_codec(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn uses_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    /// The delete horizon compaction stamped on the batch (KIP-534), if any: tombstones in
    /// it may be removed by a cleaning that starts at or after this time.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_BIT != 0).then_some(self.base_timestamp)
    }
}

/// True when the CRC-32C stored in the batch matches bytes 21.. of `batch`.
pub fn crc_matches(batch: &[u8], header: &BatchHeader) -> bool {
    batch.len() >= header.size_bytes
        && crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..header.size_bytes]) == header.crc
}

/// A batch that passed validation, ready to append.
#[derive(Clone, Debug)]
pub struct ValidBatch {
    pub bytes: Bytes,
    pub header: BatchHeader,
}

impl ValidBatch {
    pub fn records_count(&self) -> i64 {
        i64::from(self.header.last_offset_delta) + 1
    }

    /// The 17-byte prefix this batch gets on disk: the assigned base offset and the leader
    /// epoch replace what the producer sent; length and magic are kept.
    pub fn rewritten_prefix(
        &self,
        base_offset: Offset,
        epoch: LeaderEpoch,
    ) -> [u8; REWRITTEN_PREFIX_BYTES] {
        let mut prefix = [0u8; REWRITTEN_PREFIX_BYTES];
        prefix[..8].copy_from_slice(&base_offset.0.to_be_bytes());
        prefix[LENGTH_OFFSET..LEADER_EPOCH_OFFSET]
            .copy_from_slice(&self.bytes[LENGTH_OFFSET..LEADER_EPOCH_OFFSET]);
        prefix[LEADER_EPOCH_OFFSET..MAGIC_OFFSET].copy_from_slice(&epoch.0.to_be_bytes());
        prefix[MAGIC_OFFSET] = self.bytes[MAGIC_OFFSET];
        prefix
    }

    /// Sets the timestamp type to LogAppendTime with `now_ms` as max timestamp (what Kafka
    /// does for topics with `message.timestamp.type=LogAppendTime`). Copies the batch and
    /// recomputes its CRC.
    pub fn stamp_log_append_time(&mut self, now_ms: i64) {
        let mut owned = self.bytes.to_vec();
        let attributes = (self.header.attributes | TIMESTAMP_TYPE_BIT).to_be_bytes();
        owned[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes);
        owned[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&now_ms.to_be_bytes());
        let crc = crc32c::crc32c(&owned[ATTRIBUTES_OFFSET..]);
        owned[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        self.header = BatchHeader::parse(&owned).expect("header was valid before stamping");
        self.bytes = Bytes::from(owned);
    }
}

/// Fills in length and CRC of a batch whose other fields are written.
pub(crate) fn seal(mut batch: Vec<u8>) -> Vec<u8> {
    let length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
    batch[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// The header of `batch` with new attributes, timestamps and record count.
pub(crate) fn header_with(
    batch: &[u8],
    attributes: i16,
    base_timestamp: i64,
    max_timestamp: i64,
    records_count: i32,
) -> Vec<u8> {
    let mut header = batch[..BATCH_HEADER_BYTES].to_vec();
    header[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    header[BASE_TIMESTAMP_OFFSET..BASE_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&base_timestamp.to_be_bytes());
    header[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&max_timestamp.to_be_bytes());
    header[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4]
        .copy_from_slice(&records_count.to_be_bytes());
    header
}

/// Splits the `records` field of a produce request into validated batches.
///
/// Checks, per batch: complete framing, magic 2, CRC-32C, a non-empty record count that
/// agrees with `lastOffsetDelta`, no control batches from clients, the size limit, and for
/// uncompressed batches that every record's framing and offset delta are in sequence.
/// Compressed record bodies are checked by CRC and counts only: Karst stores them as sent.
pub fn validate_produced(
    records: &Bytes,
    size_limit_bytes: usize,
) -> Result<Vec<ValidBatch>, BatchError> {
    let mut batches = Vec::new();
    let mut position = 0;
    if records.is_empty() {
        return Err(BatchError::Invalid(
            "produce request carries no record batch".into(),
        ));
    }
    while position < records.len() {
        let rest = &records[position..];
        let header = BatchHeader::parse(rest).ok_or_else(|| {
            BatchError::Corrupt(format!(
                "truncated or impossible batch header at byte {position}"
            ))
        })?;
        if header.size_bytes > rest.len() {
            return Err(BatchError::Corrupt(format!(
                "batch at byte {position} claims {} bytes, {} present",
                header.size_bytes,
                rest.len()
            )));
        }
        if header.magic != CURRENT_MAGIC {
            return Err(BatchError::Corrupt(format!(
                "unsupported magic {}",
                header.magic
            )));
        }
        if !crc_matches(rest, &header) {
            return Err(BatchError::Corrupt(format!(
                "CRC mismatch in batch at byte {position}"
            )));
        }
        if header.size_bytes > size_limit_bytes {
            return Err(BatchError::TooLarge {
                size_bytes: header.size_bytes,
                limit_bytes: size_limit_bytes,
            });
        }
        if header.records_count <= 0 || header.last_offset_delta != header.records_count - 1 {
            return Err(BatchError::Invalid(format!(
                "records count {} does not match last offset delta {}",
                header.records_count, header.last_offset_delta
            )));
        }
        if header.is_control() {
            return Err(BatchError::Invalid(
                "clients may not produce control batches".into(),
            ));
        }
        if header.compression_codec() > 4 {
            return Err(BatchError::Corrupt(format!(
                "unknown compression codec {}",
                header.compression_codec()
            )));
        }
        if header.compression_codec() == 0 {
            check_uncompressed_records(
                &rest[BATCH_HEADER_BYTES..header.size_bytes],
                header.records_count,
            )?;
        }
        batches.push(ValidBatch {
            bytes: records.slice(position..position + header.size_bytes),
            header,
        });
        position += header.size_bytes;
    }
    Ok(batches)
}

/// Splits fetched record bytes from a partition leader into batches for a follower to
/// append with the leader's offsets and epochs.
///
/// Checks framing, magic 2 and CRC-32C of every batch, and that offsets rise. A trailing
/// partial batch is dropped, not an error: a leader's fetch response may end inside a
/// batch (the follower fetches it whole next time). Control batches are the leader's own
/// and are kept.
pub fn validate_replicated(records: &Bytes) -> Result<Vec<ValidBatch>, BatchError> {
    let mut batches: Vec<ValidBatch> = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let rest = &records[position..];
        let Some(header) = BatchHeader::parse(rest) else {
            break;
        };
        if header.size_bytes > rest.len() {
            break;
        }
        if header.magic != CURRENT_MAGIC || !crc_matches(rest, &header) {
            return Err(BatchError::Corrupt(format!(
                "replicated batch at offset {} (byte {position}) has a bad magic or CRC",
                header.base_offset
            )));
        }
        if header.last_offset_delta < 0
            || batches
                .last()
                .is_some_and(|previous| header.base_offset < previous.header.next_offset())
        {
            return Err(BatchError::Corrupt(format!(
                "replicated batch at offset {} does not follow the one before it",
                header.base_offset
            )));
        }
        batches.push(ValidBatch {
            bytes: records.slice(position..position + header.size_bytes),
            header,
        });
        position += header.size_bytes;
    }
    Ok(batches)
}

/// Appends `value` as a zig-zag varint (the record fields' encoding).
pub fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads a zig-zag varint; returns the value and bytes used.
pub(crate) fn read_varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut value: u64 = 0;
    for (index, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let decoded = ((value >> 1) as i64) ^ -((value & 1) as i64);
            return Some((decoded, index + 1));
        }
    }
    None
}

fn check_uncompressed_records(mut body: &[u8], records_count: i32) -> Result<(), BatchError> {
    for expected_delta in 0..i64::from(records_count) {
        let (length, used) = read_varint(body).ok_or_else(|| {
            BatchError::Corrupt(format!("record {expected_delta}: bad length varint"))
        })?;
        body = &body[used..];
        if length < 1 || length as usize > body.len() {
            return Err(BatchError::Corrupt(format!(
                "record {expected_delta}: length {length} outside the batch"
            )));
        }
        let record = &body[..length as usize];
        // attributes (1 byte), timestamp delta, then the offset delta.
        let after_attributes = record.get(1..).unwrap_or_default();
        let (_, timestamp_used) = read_varint(after_attributes).ok_or_else(|| {
            BatchError::Corrupt(format!("record {expected_delta}: bad timestamp delta"))
        })?;
        let (offset_delta, _) =
            read_varint(&after_attributes[timestamp_used..]).ok_or_else(|| {
                BatchError::Corrupt(format!("record {expected_delta}: bad offset delta"))
            })?;
        if offset_delta != expected_delta {
            return Err(BatchError::Invalid(format!(
                "record {expected_delta} has offset delta {offset_delta}"
            )));
        }
        body = &body[length as usize..];
    }
    if !body.is_empty() {
        return Err(BatchError::Corrupt(format!(
            "{} bytes after the last record of the batch",
            body.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an uncompressed batch of `values` with timestamps `base_timestamp + index`.
    pub(crate) fn batch_of(values: &[&[u8]], base_timestamp: i64) -> Vec<u8> {
        let mut records = Vec::new();
        for (index, value) in values.iter().enumerate() {
            let mut record = vec![0u8];
            write_varint(&mut record, index as i64);
            write_varint(&mut record, index as i64);
            write_varint(&mut record, -1);
            write_varint(&mut record, value.len() as i64);
            record.extend_from_slice(value);
            write_varint(&mut record, 0);
            write_varint(&mut records, record.len() as i64);
            records.extend_from_slice(&record);
        }
        let count = values.len() as i32;
        let mut batch = Vec::new();
        batch.extend_from_slice(&0i64.to_be_bytes());
        batch.extend_from_slice(
            &((BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32).to_be_bytes(),
        );
        batch.extend_from_slice(&(-1i32).to_be_bytes());
        batch.push(2);
        batch.extend_from_slice(&0u32.to_be_bytes());
        batch.extend_from_slice(&0i16.to_be_bytes());
        batch.extend_from_slice(&(count - 1).to_be_bytes());
        batch.extend_from_slice(&base_timestamp.to_be_bytes());
        batch.extend_from_slice(&(base_timestamp + i64::from(count) - 1).to_be_bytes());
        batch.extend_from_slice(&(-1i64).to_be_bytes());
        batch.extend_from_slice(&(-1i16).to_be_bytes());
        batch.extend_from_slice(&(-1i32).to_be_bytes());
        batch.extend_from_slice(&count.to_be_bytes());
        batch.extend_from_slice(&records);
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    #[test]
    fn a_well_formed_batch_is_accepted() {
        let bytes = Bytes::from(batch_of(&[b"a", b"bc", b"def"], 1000));
        let batches = validate_produced(&bytes, 1 << 20).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].records_count(), 3);
        assert_eq!(batches[0].header.max_timestamp, 1002);
    }

    #[test]
    fn a_flipped_bit_is_a_corrupt_batch() {
        let mut raw = batch_of(&[b"hello"], 1000);
        let last = raw.len() - 2;
        raw[last] ^= 0x01;
        let error = validate_produced(&Bytes::from(raw), 1 << 20).unwrap_err();
        assert!(matches!(error, BatchError::Corrupt(_)), "{error}");
    }

    #[test]
    fn a_truncated_batch_is_corrupt() {
        let raw = batch_of(&[b"hello", b"world"], 1000);
        let error =
            validate_produced(&Bytes::from(raw[..raw.len() - 3].to_vec()), 1 << 20).unwrap_err();
        assert!(matches!(error, BatchError::Corrupt(_)));
    }

    #[test]
    fn a_batch_over_the_size_limit_is_too_large() {
        let raw = batch_of(&[&[7u8; 500]], 1000);
        let error = validate_produced(&Bytes::from(raw), 100).unwrap_err();
        assert!(matches!(error, BatchError::TooLarge { .. }));
    }

    #[test]
    fn the_rewritten_prefix_keeps_the_crc_valid() {
        let bytes = Bytes::from(batch_of(&[b"x"], 5));
        let batch = validate_produced(&bytes, 1 << 20).unwrap().remove(0);
        let mut stored = batch.rewritten_prefix(Offset(42), LeaderEpoch(7)).to_vec();
        stored.extend_from_slice(&batch.bytes[REWRITTEN_PREFIX_BYTES..]);
        let header = BatchHeader::parse(&stored).unwrap();
        assert_eq!(header.base_offset, Offset(42));
        assert_eq!(header.leader_epoch, LeaderEpoch(7));
        assert!(crc_matches(&stored, &header));
    }

    #[test]
    fn log_append_time_stamping_recomputes_the_crc() {
        let bytes = Bytes::from(batch_of(&[b"x", b"y"], 5));
        let mut batch = validate_produced(&bytes, 1 << 20).unwrap().remove(0);
        batch.stamp_log_append_time(99_000);
        assert!(batch.header.uses_log_append_time());
        assert_eq!(batch.header.max_timestamp, 99_000);
        assert!(crc_matches(&batch.bytes, &batch.header));
    }
}
