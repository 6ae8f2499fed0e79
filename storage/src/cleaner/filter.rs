//! Compaction of one stored record batch: which records stay, and the bytes of the batch
//! that holds them.
//!
//! Follows Kafka's rules for magic-2 batches:
//! * a keyed record stays when no later record of its key was mapped; a record without a
//!   key is dropped (Kafka refuses them on compacted topics and its cleaner drops them);
//! * a tombstone (null value) stays until its batch's delete horizon has passed. The first
//!   cleaning that keeps a tombstone stamps the horizon, `now + delete.retention.ms`, into
//!   the batch (KIP-534: attribute bit 6, base timestamp = horizon, record timestamp deltas
//!   rewritten against it so every client still reads the original timestamps);
//! * a rewritten batch keeps its base offset, last offset delta (so the producer's last
//!   sequence and the offset after the batch are unchanged), producer id, epoch, base
//!   sequence, leader epoch, timestamp type and codec (records are recompressed with it);
//! * an emptied batch is dropped, unless it is the last batch of its producer (its header
//!   carries the producer's last sequence) or the last batch of the cleaning round (it
//!   carries the round's last offset): then its header stays with no records, as Kafka's
//!   `writeEmptyHeader` does;
//! * control and transactional batches are kept byte for byte: Karst has no transactions
//!   yet, so there are no markers or aborted-transaction index to clean them by.
//!
//! Untouched batches are copied as stored, so their producer's CRC stays.

use bytes::{Buf, BufMut, Bytes};
use proto_kafka::compression::{self, Compressor, Decompressor};
use proto_kafka::protocol::buf::ByteBuf;

use crate::batch::write_varint;
use crate::batch::{
    read_varint, BatchHeader, ATTRIBUTES_OFFSET, BASE_TIMESTAMP_OFFSET, BATCH_HEADER_BYTES,
    COMPRESSION_MASK, CRC_OFFSET, DELETE_HORIZON_BIT, LENGTH_OFFSET, LOG_OVERHEAD_BYTES,
    MAX_TIMESTAMP_OFFSET, RECORDS_COUNT_OFFSET,
};
use crate::cleaner::offset_map::OffsetMap;
use crate::types::Offset;

/// Largest decompressed record data of one batch the cleaner accepts. Stored batches were
/// at most `max.message.bytes` compressed; this bounds what a pathological one can expand
/// to in the cleaner's memory.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;

/// What to keep for a round of cleaning.
pub struct FilterRules<'a> {
    pub map: &'a OffsetMap,
    /// Records at or after this offset were not mapped: they stay as they are.
    pub map_end: Offset,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    /// Producer id -> last offset of the producer's last batch in the mapped range. A
    /// producer not in it is treated as if each of its batches were its last (it wrote
    /// nothing since the range cleaned before: its emptied batches keep their headers).
    pub producer_last_offsets: &'a std::collections::HashMap<i64, Offset>,
}

/// The fate of one batch.
#[derive(Debug)]
pub enum Filtered {
    /// Copy the stored bytes unchanged.
    Unchanged,
    /// Leave the batch out.
    Dropped,
    /// Write these bytes instead.
    Rewritten(Vec<u8>),
}

#[derive(Debug)]
pub struct FilterOutcome {
    pub filtered: Filtered,
    pub records_read: usize,
    pub records_kept: usize,
    /// The delete horizon of tombstones the batch keeps, if it keeps any.
    pub tombstone_horizon_ms: Option<i64>,
}

/// One record of a decompressed batch.
struct RecordView<'a> {
    offset: Offset,
    timestamp: i64,
    key: Option<&'a [u8]>,
    has_value: bool,
    /// The record's bytes with its length prefix.
    framed: &'a [u8],
    /// The record's attributes byte.
    attributes: u8,
    /// The record's bytes after its timestamp delta (offset delta, key, value, headers).
    after_timestamp: &'a [u8],
}

fn corrupt(what: impl Into<String>) -> String {
    what.into()
}

/// Reads a length-prefixed byte field (-1: null).
fn read_bytes_field(bytes: &[u8]) -> Result<(Option<&[u8]>, usize), String> {
    let (length, used) = read_varint(bytes).ok_or_else(|| corrupt("bad length varint"))?;
    if length < 0 {
        return Ok((None, used));
    }
    let end = used + length as usize;
    if end > bytes.len() {
        return Err(corrupt("field runs past its record"));
    }
    Ok((Some(&bytes[used..end]), end))
}

fn parse_records<'a>(
    data: &'a [u8],
    header: &BatchHeader,
    base_timestamp: i64,
) -> Result<Vec<RecordView<'a>>, String> {
    let mut records = Vec::with_capacity(header.records_count.max(0) as usize);
    let mut rest = data;
    for index in 0..header.records_count.max(0) {
        let (length, used) =
            read_varint(rest).ok_or_else(|| corrupt(format!("record {index}: bad length")))?;
        if length < 1 || used + length as usize > rest.len() {
            return Err(corrupt(format!(
                "record {index}: length {length} past the batch"
            )));
        }
        let framed = &rest[..used + length as usize];
        let body = &framed[used..];
        rest = &rest[framed.len()..];
        let attributes = body[0];
        let (timestamp_delta, timestamp_used) = read_varint(&body[1..])
            .ok_or_else(|| corrupt(format!("record {index}: bad timestamp delta")))?;
        let after_timestamp = &body[1 + timestamp_used..];
        let (offset_delta, offset_used) = read_varint(after_timestamp)
            .ok_or_else(|| corrupt(format!("record {index}: bad offset delta")))?;
        let (key, key_used) = read_bytes_field(&after_timestamp[offset_used..])
            .map_err(|problem| format!("record {index}: key: {problem}"))?;
        let (value, _) = read_bytes_field(&after_timestamp[offset_used + key_used..])
            .map_err(|problem| format!("record {index}: value: {problem}"))?;
        records.push(RecordView {
            offset: header.base_offset.plus(offset_delta),
            timestamp: base_timestamp.saturating_add(timestamp_delta),
            key,
            has_value: value.is_some(),
            framed,
            attributes,
            after_timestamp,
        });
    }
    if !rest.is_empty() {
        return Err(corrupt(format!(
            "{} bytes after the last record",
            rest.len()
        )));
    }
    Ok(records)
}

fn decompress_with<D: Decompressor<Bytes>>(compressed: Bytes) -> Result<Bytes, String>
where
    D::Buf: ByteBuf,
{
    let mut compressed = compressed;
    D::decompress(&mut compressed, |data: &mut D::Buf| {
        Ok(data.copy_to_bytes(data.remaining()))
    })
    .map_err(|error| format!("decompression failed: {error}"))
}

fn compress_with<C: Compressor<Vec<u8>>>(out: &mut Vec<u8>, raw: &[u8]) -> Result<(), String> {
    C::compress(out, |buffer: &mut C::BufMut| {
        buffer.put_slice(raw);
        Ok(())
    })
    .map_err(|error| format!("compression failed: {error}"))
}

/// The batch's record data, decompressed.
fn record_data(batch: &Bytes, header: &BatchHeader) -> Result<Bytes, String> {
    let body = batch.slice(BATCH_HEADER_BYTES..header.size_bytes);
    let data = match header.compression_codec() {
        0 => body,
        1 => decompress_with::<compression::Gzip>(body)?,
        2 => decompress_with::<compression::Snappy>(body)?,
        3 => decompress_with::<compression::Lz4>(body)?,
        4 => decompress_with::<compression::Zstd>(body)?,
        other => return Err(format!("unknown compression codec {other}")),
    };
    if data.len() > DECOMPRESSED_BATCH_BYTES_MAX {
        return Err(format!(
            "batch expands to {} bytes, over the cleaner's {DECOMPRESSED_BATCH_BYTES_MAX}",
            data.len()
        ));
    }
    Ok(data)
}

fn compress(codec: i16, raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw.len() / 2 + 64);
    match codec {
        0 => out.extend_from_slice(raw),
        1 => compress_with::<compression::Gzip>(&mut out, raw)?,
        2 => compress_with::<compression::Snappy>(&mut out, raw)?,
        3 => compress_with::<compression::Lz4>(&mut out, raw)?,
        4 => compress_with::<compression::Zstd>(&mut out, raw)?,
        other => return Err(format!("unknown compression codec {other}")),
    }
    Ok(out)
}

/// Fills in length and CRC of a batch whose other fields are written.
fn seal(mut batch: Vec<u8>) -> Vec<u8> {
    let length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
    batch[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// The header of `batch` with new attributes, timestamps and record count.
fn header_with(
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

/// Kafka's empty batch header: no records, no compression, the original offsets,
/// producer fields and max timestamp.
fn empty_batch(batch: &[u8], header: &BatchHeader) -> Vec<u8> {
    let attributes = header.attributes & !COMPRESSION_MASK & !DELETE_HORIZON_BIT;
    seal(header_with(
        batch,
        attributes,
        header.max_timestamp,
        header.max_timestamp,
        0,
    ))
}

/// Calls `visit` with the key and offset of each keyed record of `batch`.
pub fn for_each_key(
    batch: &Bytes,
    header: &BatchHeader,
    mut visit: impl FnMut(&[u8], Offset),
) -> Result<(), String> {
    let data = record_data(batch, header)?;
    for record in parse_records(&data, header, header.base_timestamp)? {
        if let Some(key) = record.key {
            visit(key, record.offset);
        }
    }
    Ok(())
}

/// The index within `batch` of its first record without a key, if any. Compressed batches
/// are decompressed to look.
pub fn first_keyless_record(batch: &Bytes, header: &BatchHeader) -> Result<Option<usize>, String> {
    let data = record_data(batch, header)?;
    let records = parse_records(&data, header, header.base_timestamp)?;
    Ok(records.iter().position(|record| record.key.is_none()))
}

/// Decides what stays of `batch` (one whole stored batch) and builds its new bytes.
pub fn filter_batch(
    batch: &Bytes,
    header: &BatchHeader,
    rules: &FilterRules<'_>,
    last_of_round: bool,
) -> Result<FilterOutcome, String> {
    let unchanged = |records: usize| FilterOutcome {
        filtered: Filtered::Unchanged,
        records_read: records,
        records_kept: records,
        tombstone_horizon_ms: None,
    };
    if header.is_control() || header.is_transactional() || header.base_offset >= rules.map_end {
        return Ok(unchanged(header.records_count.max(0) as usize));
    }
    let data = record_data(batch, header)?;
    let horizon = header.delete_horizon_ms();
    let records = parse_records(&data, header, header.base_timestamp)?;
    let horizon_passed = horizon.is_some_and(|h| rules.now_ms >= h);
    let kept: Vec<&RecordView<'_>> = records
        .iter()
        .filter(|record| {
            if record.offset >= rules.map_end {
                return true;
            }
            let Some(key) = record.key else {
                return false;
            };
            let latest = rules
                .map
                .get(key)
                .is_none_or(|mapped| record.offset >= mapped);
            latest && (record.has_value || !horizon_passed)
        })
        .collect();
    let keeps_tombstones = kept.iter().any(|record| !record.has_value);
    let new_horizon = match horizon {
        None if keeps_tombstones => Some(
            rules
                .now_ms
                .saturating_add(rules.delete_retention_ms.max(0)),
        ),
        _ => None,
    };
    let tombstone_horizon_ms = keeps_tombstones.then(|| new_horizon.or(horizon)).flatten();
    let mut outcome = FilterOutcome {
        filtered: Filtered::Unchanged,
        records_read: records.len(),
        records_kept: kept.len(),
        tombstone_horizon_ms,
    };
    if kept.len() == records.len() && new_horizon.is_none() {
        return Ok(outcome);
    }
    if kept.is_empty() {
        let producer_last = header.producer_id >= 0
            && rules
                .producer_last_offsets
                .get(&header.producer_id)
                .is_none_or(|last| *last == header.last_offset());
        outcome.filtered = if producer_last || last_of_round {
            Filtered::Rewritten(empty_batch(batch, header))
        } else {
            Filtered::Dropped
        };
        return Ok(outcome);
    }
    let base_timestamp = new_horizon.unwrap_or(header.base_timestamp);
    let mut raw = Vec::with_capacity(data.len());
    for record in &kept {
        if new_horizon.is_none() {
            raw.extend_from_slice(record.framed);
            continue;
        }
        // Re-frame the record with its timestamp delta against the horizon.
        let mut body = Vec::with_capacity(record.framed.len() + 8);
        body.push(record.attributes);
        write_varint(&mut body, record.timestamp - base_timestamp);
        body.extend_from_slice(record.after_timestamp);
        write_varint(&mut raw, body.len() as i64);
        raw.extend_from_slice(&body);
    }
    let max_timestamp = if header.uses_log_append_time() {
        header.max_timestamp
    } else {
        kept.iter()
            .map(|record| record.timestamp)
            .max()
            .unwrap_or(-1)
    };
    let mut attributes = header.attributes;
    if new_horizon.is_some() {
        attributes |= DELETE_HORIZON_BIT;
    }
    let mut rebuilt = header_with(
        batch,
        attributes,
        base_timestamp,
        max_timestamp,
        kept.len() as i32,
    );
    rebuilt.extend_from_slice(&compress(header.compression_codec(), &raw)?);
    outcome.filtered = Filtered::Rewritten(seal(rebuilt));
    Ok(outcome)
}
