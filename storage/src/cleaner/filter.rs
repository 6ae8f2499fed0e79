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

use bytes::Bytes;

use crate::batch::{
    header_with, seal, BatchHeader, BATCH_HEADER_BYTES, COMPRESSION_MASK, DELETE_HORIZON_BIT,
};
use crate::cleaner::offset_map::OffsetMap;
use crate::compression::{self, Codec, CompressionLevels, DECOMPRESSED_BATCH_BYTES_MAX};
use crate::record::{parse_records, write_reframed, RecordView};
use crate::types::Offset;

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

/// The batch's record data, decompressed.
fn record_data(batch: &Bytes, header: &BatchHeader) -> Result<Bytes, String> {
    let codec = Codec::from_id(header.compression_codec())
        .ok_or_else(|| format!("unknown compression codec {}", header.compression_codec()))?;
    let body = batch.slice(BATCH_HEADER_BYTES..header.size_bytes);
    compression::decompress(codec, body, DECOMPRESSED_BATCH_BYTES_MAX)
        .map_err(|error| error.to_string())
}

/// Record data compressed again with the batch's own codec (at Kafka's default levels).
fn compress(header: &BatchHeader, raw: &[u8]) -> Result<Vec<u8>, String> {
    let codec = Codec::from_id(header.compression_codec())
        .ok_or_else(|| format!("unknown compression codec {}", header.compression_codec()))?;
    compression::compress(codec, raw, &CompressionLevels::default())
        .map_err(|error| error.to_string())
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
        write_reframed(
            &mut raw,
            record,
            record.timestamp - base_timestamp,
            record.offset_delta,
        );
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
    rebuilt.extend_from_slice(&compress(header, &raw)?);
    outcome.filtered = Filtered::Rewritten(seal(rebuilt));
    Ok(outcome)
}
