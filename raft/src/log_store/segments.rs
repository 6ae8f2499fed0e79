//! The Raft log on disk: a directory of segment files of framed, checksummed entries.
//!
//! Segment `NNNNNNNNNNNNNNNNNNNN.raftlog` (20-digit index, like Kafka's segment names) holds
//! entries at or after that index, each framed as
//!
//! ```text
//! [body length: u32 LE][crc32c(body): u32 LE][body = codec::encode(StoredEntry)]
//! ```
//!
//! Entries are consecutive across segments. Writes go to the last segment at its end with
//! `pwrite`; this module never syncs appended data itself — the caller hands the returned file
//! to the flusher (see [`super::flusher`]) and only then reports the append durable. The one
//! exception is rolling to a new segment: the old segment is fdatasynced first, so a flush of
//! the newest segment covers every earlier entry.
//!
//! Opening scans every segment. A torn or corrupt frame at the end of the last segment is a
//! crash mid-append (never acknowledged) and is cut off; a bad frame anywhere else, or a gap
//! in the indexes, is corruption and refuses to open, loudly.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec;
use crate::durable_file::sync_directory;
use crate::stored::{StoredEntry, StoredLogId};

const SEGMENT_SUFFIX: &str = ".raftlog";
const FRAME_HEADER_BYTES: usize = 8;
/// Largest entry body accepted. An entry is one metadata batch; creating a topic with 100,000
/// partitions is a few MiB. Anything bigger in a frame header is damage, not data.
pub const ENTRY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Where one entry lives.
#[derive(Clone, Copy, Debug)]
struct Position {
    segment_base: u64,
    offset: u64,
    frame_bytes: u64,
    log_id: StoredLogId,
}

struct Segment {
    file: Arc<File>,
    bytes: u64,
}

pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes_max: u64,
    segments: BTreeMap<u64, Segment>,
    /// Every live (not purged) entry, by index.
    positions: BTreeMap<u64, Position>,
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

fn corrupt(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// One frame read from a segment: `Ok(None)` if the bytes end before a whole valid frame.
fn read_frame(bytes: &[u8]) -> Option<(StoredEntry, usize)> {
    let header = bytes.get(..FRAME_HEADER_BYTES)?;
    let body_bytes = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if body_bytes > ENTRY_BYTES_MAX {
        return None;
    }
    let body = bytes.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + body_bytes)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let entry = crate::format_v1::decode_entry(body).ok()?;
    Some((entry, FRAME_HEADER_BYTES + body_bytes))
}

fn encode_frame(entry: &StoredEntry, out: &mut Vec<u8>) -> io::Result<()> {
    let body = codec::encode(entry)?;
    if body.len() > ENTRY_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "log entry of {} bytes exceeds {ENTRY_BYTES_MAX}",
                body.len()
            ),
        ));
    }
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir`, skipping entries at or before `purged`.
    pub fn open(
        dir: &Path,
        segment_bytes_max: u64,
        purged: Option<StoredLogId>,
    ) -> io::Result<SegmentLog> {
        fs::create_dir_all(dir)?;
        let mut bases = Vec::new();
        for dirent in fs::read_dir(dir)? {
            let name = dirent?.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name.strip_suffix(SEGMENT_SUFFIX) {
                let base = base
                    .parse::<u64>()
                    .map_err(|_| corrupt(format!("unexpected file {name} in {}", dir.display())))?;
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut log = SegmentLog {
            dir: dir.to_owned(),
            segment_bytes_max,
            segments: BTreeMap::new(),
            positions: BTreeMap::new(),
        };
        let last_base = bases.last().copied();
        let mut previous_index = purged.map(|log_id| log_id.index);
        for base in bases {
            previous_index =
                log.load_segment(base, Some(base) == last_base, purged, previous_index)?;
        }
        Ok(log)
    }

    /// Indexes one segment's entries; returns the last index seen.
    fn load_segment(
        &mut self,
        base: u64,
        is_last: bool,
        purged: Option<StoredLogId>,
        mut previous_index: Option<u64>,
    ) -> io::Result<Option<u64>> {
        let path = segment_path(&self.dir, base);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let bytes = fs::read(&path)?;
        let mut offset = 0usize;
        while offset < bytes.len() {
            let Some((entry, frame_bytes)) = read_frame(&bytes[offset..]) else {
                if !is_last {
                    return Err(corrupt(format!(
                        "{} is damaged at byte {offset} and is not the last segment",
                        path.display()
                    )));
                }
                tracing::warn!(path = %path.display(), offset, "raft log: cutting off a torn tail");
                file.set_len(offset as u64)?;
                file.sync_all()?;
                break;
            };
            let index = entry.log_id.index;
            let is_purged = purged.is_some_and(|purged| index <= purged.index);
            if !is_purged {
                if let Some(previous) = previous_index {
                    if index != previous + 1 {
                        return Err(corrupt(format!(
                            "{}: entry {index} follows entry {previous}",
                            path.display()
                        )));
                    }
                }
                previous_index = Some(index);
                self.positions.insert(
                    index,
                    Position {
                        segment_base: base,
                        offset: offset as u64,
                        frame_bytes: frame_bytes as u64,
                        log_id: entry.log_id,
                    },
                );
            }
            offset += frame_bytes;
        }
        let bytes = file.metadata()?.len();
        self.segments.insert(
            base,
            Segment {
                file: Arc::new(file),
                bytes,
            },
        );
        Ok(previous_index)
    }

    pub fn last_log_id(&self) -> Option<StoredLogId> {
        self.positions.values().next_back().map(|p| p.log_id)
    }

    /// Appends `entries` (consecutive, following the last entry or `purged`) to the page cache.
    /// Returns the file to fdatasync before the append may be reported durable.
    pub fn append(
        &mut self,
        entries: &[StoredEntry],
        purged: Option<StoredLogId>,
    ) -> io::Result<Option<Arc<File>>> {
        let mut expected = self.last_log_id().or(purged).map(|log_id| log_id.index + 1);
        let mut frames = Vec::new();
        let mut pending: Vec<(u64, u64, StoredLogId)> = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            if expected.is_some_and(|expected| expected != index) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("append of entry {index}, expected {expected:?}"),
                ));
            }
            expected = Some(index + 1);
            if self.needs_roll(frames.len() as u64) {
                self.write_frames(&mut frames, &mut pending)?;
                self.roll(index)?;
            }
            let start = frames.len() as u64;
            encode_frame(entry, &mut frames)?;
            pending.push((start, frames.len() as u64 - start, entry.log_id));
        }
        self.write_frames(&mut frames, &mut pending)?;
        Ok(self
            .segments
            .values()
            .next_back()
            .map(|s| Arc::clone(&s.file)))
    }

    fn needs_roll(&self, buffered_bytes: u64) -> bool {
        match self.segments.values().next_back() {
            None => true,
            Some(active) => {
                active.bytes > 0 && active.bytes + buffered_bytes >= self.segment_bytes_max
            }
        }
    }

    /// Writes buffered frames at the end of the active segment and indexes them.
    fn write_frames(
        &mut self,
        frames: &mut Vec<u8>,
        pending: &mut Vec<(u64, u64, StoredLogId)>,
    ) -> io::Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        let (&base, active) = self
            .segments
            .iter_mut()
            .next_back()
            .expect("a segment exists once needs_roll created one");
        active.file.write_all_at(frames, active.bytes)?;
        for (start, frame_bytes, log_id) in pending.drain(..) {
            self.positions.insert(
                log_id.index,
                Position {
                    segment_base: base,
                    offset: active.bytes + start,
                    frame_bytes,
                    log_id,
                },
            );
        }
        active.bytes += frames.len() as u64;
        frames.clear();
        Ok(())
    }

    /// Starts a new segment for entries from `base`. The previous one is synced first so that
    /// syncing the newest segment makes every earlier append durable.
    fn roll(&mut self, base: u64) -> io::Result<()> {
        if let Some(active) = self.segments.values().next_back() {
            active.file.sync_data()?;
        }
        let path = segment_path(&self.dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        sync_directory(&self.dir)?;
        self.segments.insert(
            base,
            Segment {
                file: Arc::new(file),
                bytes: 0,
            },
        );
        Ok(())
    }

    /// Reads the live entries with index in `start..end`.
    pub fn read(&self, start: u64, end: u64) -> io::Result<Vec<StoredEntry>> {
        let mut entries = Vec::new();
        if start >= end {
            return Ok(entries);
        }
        for (&index, position) in self.positions.range(start..end) {
            let segment = &self.segments[&position.segment_base];
            let mut frame = vec![0u8; position.frame_bytes as usize];
            segment.file.read_exact_at(&mut frame, position.offset)?;
            let (entry, _) = read_frame(&frame).ok_or_else(|| {
                corrupt(format!(
                    "raft log entry {index} in segment {} fails its checksum",
                    position.segment_base
                ))
            })?;
            assert_eq!(
                entry.log_id, position.log_id,
                "index points at the wrong entry"
            );
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Removes every entry after index `last_kept` (all entries if `None`), durably.
    pub fn truncate_after(&mut self, last_kept: Option<u64>) -> io::Result<()> {
        let first_removed = match last_kept {
            Some(index) => index + 1,
            None => 0,
        };
        let Some(&cut) = self.positions.get(&first_removed) else {
            return Ok(());
        };
        let doomed: Vec<u64> = self
            .segments
            .range(cut.segment_base + 1..)
            .map(|(&base, _)| base)
            .collect();
        for base in doomed {
            self.segments.remove(&base);
            fs::remove_file(segment_path(&self.dir, base))?;
        }
        let segment = self
            .segments
            .get_mut(&cut.segment_base)
            .expect("position points into a live segment");
        segment.file.set_len(cut.offset)?;
        segment.file.sync_all()?;
        segment.bytes = cut.offset;
        sync_directory(&self.dir)?;
        self.positions.split_off(&first_removed);
        Ok(())
    }

    /// Forgets entries up to and including `index` and deletes segments holding nothing else.
    /// The caller has already made the purge point durable, so entries left in a kept segment
    /// are skipped when the log is opened again.
    pub fn purge_through(&mut self, index: u64) -> io::Result<()> {
        self.positions = self.positions.split_off(&(index + 1));
        let bases: Vec<u64> = self.segments.keys().copied().collect();
        for pair in bases.windows(2) {
            let (base, next_base) = (pair[0], pair[1]);
            // Every entry of `base` is below `next_base`; the newest segment is always kept.
            if next_base <= index + 1 {
                self.segments.remove(&base);
                fs::remove_file(segment_path(&self.dir, base))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored::StoredPayload;

    fn entry(index: u64) -> StoredEntry {
        StoredEntry {
            log_id: StoredLogId { term: 1, index },
            payload: StoredPayload::Blank,
        }
    }

    fn indexes(log: &SegmentLog) -> Vec<u64> {
        log.read(0, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect()
    }

    #[test]
    fn entries_survive_reopen_across_rolled_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), 100, None).unwrap();
        for index in 0..20 {
            log.append(&[entry(index)], None).unwrap();
        }
        assert!(log.segments.len() > 2, "small segments roll");
        drop(log);
        let log = SegmentLog::open(dir.path(), 100, None).unwrap();
        assert_eq!(indexes(&log), (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_interior_damage_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), 100, None).unwrap();
        for index in 0..20 {
            log.append(&[entry(index)], None).unwrap();
        }
        let last_base = *log.segments.keys().next_back().unwrap();
        let first_base = *log.segments.keys().next().unwrap();
        drop(log);

        // A crash mid-append leaves half a frame at the end of the newest segment.
        let last = segment_path(dir.path(), last_base);
        let length = fs::metadata(&last).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .set_len(length - 3)
            .unwrap();
        let log = SegmentLog::open(dir.path(), 100, None).unwrap();
        assert_eq!(log.last_log_id().unwrap().index, 18);
        drop(log);

        // A flipped byte in an older segment is corruption.
        let first = segment_path(dir.path(), first_base);
        let mut bytes = fs::read(&first).unwrap();
        bytes[10] ^= 0xff;
        fs::write(&first, bytes).unwrap();
        assert!(SegmentLog::open(dir.path(), 100, None).is_err());
    }

    #[test]
    fn truncate_and_purge_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), 100, None).unwrap();
        for index in 0..20 {
            log.append(&[entry(index)], None).unwrap();
        }
        log.truncate_after(Some(11)).unwrap();
        log.append(&[entry(12)], None).unwrap();
        let purged = StoredLogId { term: 1, index: 7 };
        log.purge_through(7).unwrap();
        assert_eq!(indexes(&log), (8..=12).collect::<Vec<_>>());
        drop(log);
        let log = SegmentLog::open(dir.path(), 100, Some(purged)).unwrap();
        assert_eq!(indexes(&log), (8..=12).collect::<Vec<_>>());
    }
}
