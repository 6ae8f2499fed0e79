//! Rebuilding a log's producer state from disk: the newest usable snapshot at or below the
//! log end, then the batch headers after it. Used when a log opens and after a truncation.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::error::LogError;
use crate::producer_state::{snapshot, ProducerStateManager};
use crate::segment::Segment;
use crate::types::{Offset, TopicPartition};

/// Bytes read at once while scanning batch headers: one read covers many small batches.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Where a rebuild reads from.
pub(crate) struct RebuildSource<'a> {
    pub partition: &'a TopicPartition,
    pub dir: &'a Path,
    pub segments: &'a BTreeMap<Offset, Segment>,
    pub log_end_offset: Offset,
    pub now_ms: i64,
    pub expiration_ms: i64,
}

/// The producer state of the log as of its end: snapshots above the end are deleted (they
/// describe batches the log no longer holds), the newest readable one below is loaded, and
/// the batches from its offset to the end are applied. Without a snapshot, every segment is
/// scanned. Producers past `producer.id.expiration.ms` are dropped.
pub(crate) fn rebuild(source: &RebuildSource<'_>) -> Result<ProducerStateManager, LogError> {
    let dir = source.dir;
    snapshot::delete_temporaries(dir)?;
    snapshot::delete_where(dir, |offset| offset > source.log_end_offset)?;
    let mut state = ProducerStateManager::new();
    let first_base = source.segments.keys().next().copied();
    let mut scan_from = first_base.unwrap_or(source.log_end_offset);
    let mut loaded = None;
    for offset in snapshot::list(dir)?.into_iter().rev() {
        match snapshot::read(dir, offset)? {
            Some(entries) => {
                for (producer_id, entry) in entries {
                    state.insert(producer_id, entry);
                }
                scan_from = offset;
                loaded = Some(offset);
                break;
            }
            None => {
                tracing::warn!(partition = %source.partition, offset = offset.0, "producer snapshot is damaged; deleting it and using an older one");
                snapshot::delete(dir, offset);
            }
        }
    }
    // Keep the snapshots at segment bases (a later truncation may need them) and the one
    // just loaded; others (clean-close snapshots the log has grown past) are stray.
    snapshot::delete_where(dir, |offset| {
        Some(offset) != loaded && !source.segments.contains_key(&offset)
    })?;
    let scanned = scan(
        source.segments,
        scan_from,
        source.log_end_offset,
        &mut state,
    )?;
    state.remove_expired(source.now_ms, source.expiration_ms);
    if scanned > 0 || !state.is_empty() {
        tracing::info!(
            partition = %source.partition,
            from_offset = scan_from.0,
            batches_scanned = scanned,
            producers = state.len(),
            "producer state rebuilt"
        );
    }
    Ok(state)
}

/// Applies the headers of every batch in `[from, end)` to `state`; returns how many batches
/// were read.
fn scan(
    segments: &BTreeMap<Offset, Segment>,
    from: Offset,
    end: Offset,
    state: &mut ProducerStateManager,
) -> Result<usize, LogError> {
    let mut batches = 0;
    for segment in segments.values() {
        if segment.next_offset <= from || segment.base_offset() >= end {
            continue;
        }
        let relative = (from.0 - segment.base_offset().0).max(0) as u32;
        let mut position = u64::from(segment.index.position_for(relative));
        let mut buffer = vec![0u8; SCAN_CHUNK_BYTES];
        while position < segment.size_bytes {
            let length = (segment.size_bytes - position).min(SCAN_CHUNK_BYTES as u64) as usize;
            let chunk = &mut buffer[..length];
            segment
                .file
                .file
                .read_exact_at(chunk, position)
                .map_err(LogError::io("read segment", &segment.file.path))?;
            let mut consumed = 0usize;
            while consumed + BATCH_HEADER_BYTES <= chunk.len() {
                let Some(header) = BatchHeader::parse(&chunk[consumed..]) else {
                    // Recovery already cut the log after its last valid batch.
                    return Err(LogError::Corrupt {
                        path: segment.file.path.clone(),
                        position: position + consumed as u64,
                    });
                };
                if header.base_offset >= end {
                    return Ok(batches);
                }
                if header.base_offset >= from {
                    state.update_from_batch(&header);
                    batches += 1;
                }
                consumed += header.size_bytes;
            }
            if consumed == 0 {
                // Fewer than a header's bytes left in the file: a torn tail recovery cut.
                break;
            }
            position += consumed as u64;
        }
    }
    Ok(batches)
}
