//! The records inside a (decompressed) magic-2 batch: parsing them into views, and framing
//! one anew with other timestamp and offset deltas.
//!
//! Shared by the cleaner (which keeps some records of a stored batch) and the produce
//! validator (which checks every record a producer sent and may rebuild the batch in the
//! topic's codec). Both work on record data already decompressed.

use crate::batch::{read_varint, write_varint, BatchHeader};
use crate::types::Offset;

/// One record of a decompressed batch, borrowed from its data.
pub(crate) struct RecordView<'a> {
    pub offset: Offset,
    pub offset_delta: i64,
    /// Base timestamp plus the record's delta (for a LogAppendTime batch the reader uses the
    /// batch's max timestamp instead: see [`RecordView::effective_timestamp`]).
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub has_value: bool,
    /// The record's bytes with its length prefix.
    pub framed: &'a [u8],
    /// The record's attributes byte.
    pub attributes: u8,
    /// The record's bytes after its offset delta (key, value, headers).
    pub after_offset_delta: &'a [u8],
}

impl RecordView<'_> {
    /// The timestamp a consumer reads: the batch's max timestamp for LogAppendTime batches
    /// (Kafka's rule), else the record's own.
    pub fn effective_timestamp(&self, header: &BatchHeader) -> i64 {
        if header.uses_log_append_time() {
            header.max_timestamp
        } else {
            self.timestamp
        }
    }
}

/// Reads a length-prefixed byte field (-1: null); returns it and the bytes used.
fn read_bytes_field(bytes: &[u8]) -> Result<(Option<&[u8]>, usize), String> {
    let (length, used) = read_varint(bytes).ok_or("bad length varint")?;
    if length < 0 {
        return Ok((None, used));
    }
    let end = used + length as usize;
    if end > bytes.len() {
        return Err("field runs past its record".to_owned());
    }
    Ok((Some(&bytes[used..end]), end))
}

/// Parses the `records_count` records of `data`, the decompressed body of the batch with
/// `header`; timestamps are taken against `base_timestamp`.
pub(crate) fn parse_records<'a>(
    data: &'a [u8],
    header: &BatchHeader,
    base_timestamp: i64,
) -> Result<Vec<RecordView<'a>>, String> {
    let mut records = Vec::with_capacity(header.records_count.max(0) as usize);
    let mut rest = data;
    for index in 0..header.records_count.max(0) {
        let (length, used) = read_varint(rest).ok_or(format!("record {index}: bad length"))?;
        if length < 1 || used + length as usize > rest.len() {
            return Err(format!("record {index}: length {length} past the batch"));
        }
        let framed = &rest[..used + length as usize];
        let body = &framed[used..];
        rest = &rest[framed.len()..];
        let attributes = body[0];
        let (timestamp_delta, timestamp_used) =
            read_varint(&body[1..]).ok_or(format!("record {index}: bad timestamp delta"))?;
        let after_timestamp = &body[1 + timestamp_used..];
        let (offset_delta, offset_used) =
            read_varint(after_timestamp).ok_or(format!("record {index}: bad offset delta"))?;
        let after_offset_delta = &after_timestamp[offset_used..];
        let (key, key_used) = read_bytes_field(after_offset_delta)
            .map_err(|problem| format!("record {index}: key: {problem}"))?;
        let (value, _) = read_bytes_field(&after_offset_delta[key_used..])
            .map_err(|problem| format!("record {index}: value: {problem}"))?;
        records.push(RecordView {
            offset: header.base_offset.plus(offset_delta),
            offset_delta,
            timestamp: base_timestamp.saturating_add(timestamp_delta),
            key,
            has_value: value.is_some(),
            framed,
            attributes,
            after_offset_delta,
        });
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last record", rest.len()));
    }
    Ok(records)
}

/// Appends `record` to `out`, framed anew with the given deltas; key, value and headers are
/// copied as they are.
pub(crate) fn write_reframed(
    out: &mut Vec<u8>,
    record: &RecordView<'_>,
    timestamp_delta: i64,
    offset_delta: i64,
) {
    let mut body = Vec::with_capacity(record.framed.len() + 16);
    body.push(record.attributes);
    write_varint(&mut body, timestamp_delta);
    write_varint(&mut body, offset_delta);
    body.extend_from_slice(record.after_offset_delta);
    write_varint(out, body.len() as i64);
    out.extend_from_slice(&body);
}
