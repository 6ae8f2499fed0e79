//! Producer-state snapshot files: `<20-digit offset>.snapshot` in the partition directory,
//! holding the producer state as of that offset (every batch below it applied), like
//! Kafka's. Written when a segment rolls (the offset is the new segment's base) and when the
//! log closes cleanly (the log end offset), so recovery reads the newest one and scans only
//! the batch headers after it.
//!
//! The format is Karst's own (version 1), big-endian: `version: u16`, `crc32c: u32` of
//! everything after it, `count: u32`, then per producer `producer_id: i64`, `epoch: i16`,
//! `last_timestamp_ms: i64`, `current_txn_first_offset: i64` (-1 for none), `batches: u8`,
//! and per batch `first_sequence: i32`, `last_sequence: i32`, `base_offset: i64`,
//! `last_offset: i64`, `max_timestamp_ms: i64`. Unlike Kafka's, it keeps all of a
//! producer's remembered batches, so a retry of any of the last five is still recognised
//! after a restart. A file that fails its CRC or does not parse is treated as absent.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::LogError;
use crate::producer_state::{BatchRecord, ProducerEntry, ProducerStateManager, BATCHES_RETAINED};
use crate::segment::segment_path;
use crate::types::{Offset, ProducerEpoch, ProducerId};

pub const SNAPSHOT_EXTENSION: &str = "snapshot";
const FORMAT_VERSION: u16 = 1;
const HEADER_BYTES: usize = 2 + 4;
const ENTRY_FIXED_BYTES: usize = 8 + 2 + 8 + 8 + 1;
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;

/// The snapshot file for `offset` in `dir`.
pub fn snapshot_path(dir: &Path, offset: Offset) -> PathBuf {
    segment_path(dir, offset, SNAPSHOT_EXTENSION)
}

/// Offsets of the snapshot files in `dir`, ascending.
pub fn list(dir: &Path) -> Result<Vec<Offset>, LogError> {
    let mut offsets = Vec::new();
    for entry in fs::read_dir(dir).map_err(LogError::io("list log directory", dir))? {
        let entry = entry.map_err(LogError::io("list log directory", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if let Ok(offset) = stem.parse::<i64>() {
                offsets.push(Offset(offset));
            }
        }
    }
    offsets.sort();
    Ok(offsets)
}

/// Removes temporary files of snapshot writes a crash interrupted.
pub fn delete_temporaries(dir: &Path) -> Result<(), LogError> {
    for entry in fs::read_dir(dir).map_err(LogError::io("list log directory", dir))? {
        let entry = entry.map_err(LogError::io("list log directory", dir))?;
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(".snapshot.tmp")
        {
            let path = entry.path();
            fs::remove_file(&path).map_err(LogError::io("remove producer snapshot", &path))?;
        }
    }
    Ok(())
}

/// Removes the snapshot at `offset`; a missing file is fine.
pub fn delete(dir: &Path, offset: Offset) {
    let path = snapshot_path(dir, offset);
    if let Err(error) = fs::remove_file(&path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %error, "could not delete producer snapshot");
        }
    }
}

/// Removes every snapshot for which `doomed` says so.
pub fn delete_where(dir: &Path, doomed: impl Fn(Offset) -> bool) -> Result<(), LogError> {
    for offset in list(dir)? {
        if doomed(offset) {
            delete(dir, offset);
        }
    }
    Ok(())
}

/// The bytes of a snapshot of `state`.
pub fn encode(state: &ProducerStateManager) -> Vec<u8> {
    let entries = state.entries();
    let mut body = Vec::with_capacity(
        4 + entries.len() * (ENTRY_FIXED_BYTES + BATCHES_RETAINED * BATCH_BYTES),
    );
    body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (producer_id, entry) in &entries {
        body.extend_from_slice(&producer_id.0.to_be_bytes());
        body.extend_from_slice(&entry.epoch.0.to_be_bytes());
        body.extend_from_slice(&entry.last_timestamp_ms.to_be_bytes());
        let txn = entry.current_txn_first_offset.map_or(-1, |offset| offset.0);
        body.extend_from_slice(&txn.to_be_bytes());
        body.push(entry.batches.len() as u8);
        for batch in &entry.batches {
            body.extend_from_slice(&batch.first_sequence.to_be_bytes());
            body.extend_from_slice(&batch.last_sequence.to_be_bytes());
            body.extend_from_slice(&batch.base_offset.0.to_be_bytes());
            body.extend_from_slice(&batch.last_offset.0.to_be_bytes());
            body.extend_from_slice(&batch.max_timestamp_ms.to_be_bytes());
        }
    }
    let mut bytes = Vec::with_capacity(HEADER_BYTES + body.len());
    bytes.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

/// Reads snapshot bytes; `None` when they are not a valid snapshot of this version.
pub fn decode(bytes: &[u8]) -> Option<Vec<(ProducerId, ProducerEntry)>> {
    let mut reader = Reader(bytes);
    if reader.u16()? != FORMAT_VERSION {
        return None;
    }
    let crc = reader.u32()?;
    if crc32c::crc32c(reader.0) != crc {
        return None;
    }
    let count = reader.u32()? as usize;
    // Bounded by the file: each entry takes at least ENTRY_FIXED_BYTES.
    if count > reader.0.len() / ENTRY_FIXED_BYTES {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let producer_id = ProducerId(reader.i64()?);
        let epoch = ProducerEpoch(reader.i16()?);
        let last_timestamp_ms = reader.i64()?;
        let txn = reader.i64()?;
        let batch_count = reader.u8()? as usize;
        if batch_count > BATCHES_RETAINED {
            return None;
        }
        let mut batches = VecDeque::with_capacity(BATCHES_RETAINED);
        for _ in 0..batch_count {
            batches.push_back(BatchRecord {
                first_sequence: reader.i32()?,
                last_sequence: reader.i32()?,
                base_offset: Offset(reader.i64()?),
                last_offset: Offset(reader.i64()?),
                max_timestamp_ms: reader.i64()?,
            });
        }
        entries.push((
            producer_id,
            ProducerEntry {
                epoch,
                batches,
                last_timestamp_ms,
                current_txn_first_offset: (txn >= 0).then_some(Offset(txn)),
            },
        ));
    }
    reader.0.is_empty().then_some(entries)
}

/// Writes the snapshot of `state` at `offset` durably: a temporary file, synced, renamed
/// into place. The rename's directory entry is synced with the next directory sync (a
/// lost snapshot only makes the next recovery scan further back).
pub fn write(dir: &Path, offset: Offset, state: &ProducerStateManager) -> Result<(), LogError> {
    let path = snapshot_path(dir, offset);
    let temporary = path.with_extension("snapshot.tmp");
    let bytes = encode(state);
    let mut file = fs::File::create(&temporary)
        .map_err(LogError::io("create producer snapshot", &temporary))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_data())
        .map_err(LogError::io("write producer snapshot", &temporary))?;
    fs::rename(&temporary, &path).map_err(LogError::io("rename producer snapshot", &path))
}

/// Reads the snapshot at `offset`; `Ok(None)` when it is damaged (the caller falls back to
/// an older one or a scan).
pub fn read(
    dir: &Path,
    offset: Offset,
) -> Result<Option<Vec<(ProducerId, ProducerEntry)>>, LogError> {
    let path = snapshot_path(dir, offset);
    let bytes = fs::read(&path).map_err(LogError::io("read producer snapshot", &path))?;
    Ok(decode(&bytes))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}
