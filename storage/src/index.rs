//! Sparse indexes of one segment: `.index` (relative offset -> byte position) and
//! `.timeindex` (max timestamp so far -> relative offset), in Kafka's on-disk layout.
//!
//! The indexes of the active segment live in memory and are written out when the segment
//! is sealed (rolled) or the log is closed. They are never needed for durability: recovery
//! rebuilds them from the `.log` file whenever they are missing or inconsistent.

use std::fs;
use std::io;
use std::path::Path;

/// One `.index` entry: 4-byte offset relative to the segment base, 4-byte file position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One `.timeindex` entry: 8-byte timestamp, 4-byte relative offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

#[derive(Clone, Debug, Default)]
pub struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

impl SegmentIndex {
    /// The position to start scanning from for `relative_offset`: the last entry at or
    /// before it, or the segment start.
    pub fn position_for(&self, relative_offset: u32) -> u32 {
        let after = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        if after == 0 {
            0
        } else {
            self.offsets[after - 1].position
        }
    }

    /// The relative offset to start scanning from for the first record with a timestamp at
    /// or after `timestamp`.
    pub fn relative_offset_for_time(&self, timestamp: i64) -> u32 {
        let after = self.times.partition_point(|e| e.timestamp < timestamp);
        if after == 0 {
            0
        } else {
            self.times[after - 1].relative_offset
        }
    }

    pub fn push_offset(&mut self, entry: OffsetEntry) {
        debug_assert!(self
            .offsets
            .last()
            .is_none_or(|last| last.relative_offset < entry.relative_offset));
        self.offsets.push(entry);
    }

    pub fn push_time(&mut self, entry: TimeEntry) {
        if self
            .times
            .last()
            .is_none_or(|last| entry.timestamp > last.timestamp)
        {
            self.times.push(entry);
        }
    }

    /// Writes both index files (complete rewrite) and syncs them.
    pub fn write_files(&self, offset_path: &Path, time_path: &Path) -> io::Result<()> {
        let mut offsets = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES);
        for entry in &self.offsets {
            offsets.extend_from_slice(&entry.relative_offset.to_be_bytes());
            offsets.extend_from_slice(&entry.position.to_be_bytes());
        }
        let mut times = Vec::with_capacity(self.times.len() * TIME_ENTRY_BYTES);
        for entry in &self.times {
            times.extend_from_slice(&entry.timestamp.to_be_bytes());
            times.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        write_synced(offset_path, &offsets)?;
        write_synced(time_path, &times)
    }

    /// Loads both files; `None` when either is missing or not a sane index for a segment of
    /// `segment_bytes` bytes (then the caller rebuilds from the log).
    pub fn read_files(
        offset_path: &Path,
        time_path: &Path,
        segment_bytes: u64,
    ) -> Option<SegmentIndex> {
        let offsets_raw = fs::read(offset_path).ok()?;
        let times_raw = fs::read(time_path).ok()?;
        if offsets_raw.len() % OFFSET_ENTRY_BYTES != 0 || times_raw.len() % TIME_ENTRY_BYTES != 0 {
            return None;
        }
        let offsets: Vec<OffsetEntry> = offsets_raw
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|c| OffsetEntry {
                relative_offset: u32::from_be_bytes(c[..4].try_into().expect("4")),
                position: u32::from_be_bytes(c[4..].try_into().expect("4")),
            })
            .collect();
        let times: Vec<TimeEntry> = times_raw
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|c| TimeEntry {
                timestamp: i64::from_be_bytes(c[..8].try_into().expect("8")),
                relative_offset: u32::from_be_bytes(c[8..].try_into().expect("4")),
            })
            .collect();
        let ordered = offsets
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
        let in_file = offsets
            .last()
            .is_none_or(|e| u64::from(e.position) < segment_bytes);
        (ordered && in_file).then_some(SegmentIndex { offsets, times })
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_the_last_entry_at_or_before_the_target() {
        let mut index = SegmentIndex::default();
        index.push_offset(OffsetEntry {
            relative_offset: 10,
            position: 4096,
        });
        index.push_offset(OffsetEntry {
            relative_offset: 20,
            position: 8192,
        });
        assert_eq!(index.position_for(5), 0);
        assert_eq!(index.position_for(10), 4096);
        assert_eq!(index.position_for(19), 4096);
        assert_eq!(index.position_for(25), 8192);
    }

    #[test]
    fn index_files_round_trip_and_garbage_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let (offsets, times) = (directory.path().join("i"), directory.path().join("t"));
        let mut index = SegmentIndex::default();
        index.push_offset(OffsetEntry {
            relative_offset: 3,
            position: 100,
        });
        index.push_time(TimeEntry {
            timestamp: 77,
            relative_offset: 3,
        });
        index.write_files(&offsets, &times).unwrap();
        let loaded = SegmentIndex::read_files(&offsets, &times, 200).unwrap();
        assert_eq!(loaded.offsets, index.offsets);
        assert_eq!(loaded.times, index.times);
        assert!(
            SegmentIndex::read_files(&offsets, &times, 50).is_none(),
            "position past the file"
        );
        fs::write(&offsets, [1, 2, 3]).unwrap();
        assert!(SegmentIndex::read_files(&offsets, &times, 200).is_none());
    }
}
