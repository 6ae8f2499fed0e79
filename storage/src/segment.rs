//! One segment of a partition log: the `.log` file of batches starting at a base offset,
//! with its sparse indexes, and the recovery scan that validates it.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{crc_matches, BatchHeader, BATCH_HEADER_BYTES};
use crate::error::LogError;
use crate::index::{OffsetEntry, SegmentIndex, TimeEntry};
use crate::types::Offset;

/// The open `.log` file of a segment, shared with readers. Readers keep it alive (and
/// readable) even after retention unlinks the file.
#[derive(Debug)]
pub struct SegmentFile {
    pub base_offset: Offset,
    pub file: File,
    pub path: PathBuf,
}

/// `<dir>/<20-digit base offset>.<extension>`, Kafka's segment file naming.
pub fn segment_path(dir: &Path, base_offset: Offset, extension: &str) -> PathBuf {
    dir.join(format!("{:020}.{extension}", base_offset.0))
}

/// A segment's mutable bookkeeping, guarded by its log's state lock.
#[derive(Debug)]
pub struct Segment {
    pub file: Arc<SegmentFile>,
    /// Bytes written (possibly not yet durable).
    pub size_bytes: u64,
    /// Bytes readers may see: durable, or written when the log does not sync before ack.
    pub visible_bytes: u64,
    /// The offset after the last batch written.
    pub next_offset: Offset,
    pub index: SegmentIndex,
    pub bytes_since_index_entry: u64,
    /// Largest record timestamp in the segment, -1 when empty.
    pub max_timestamp: i64,
    /// Base offset of the batch holding `max_timestamp`.
    pub max_timestamp_batch: Offset,
    /// Wall-clock creation time, for `segment.ms`.
    pub created_ms: i64,
    /// Bytes from the start known to hold exactly what was synced: written by this process,
    /// or read back and CRC-checked since it started. Only this prefix may be sent with
    /// `sendfile`, which skips the read-side check.
    pub verified_bytes: u64,
}

impl Segment {
    pub fn create(dir: &Path, base_offset: Offset, now_ms: i64) -> Result<Segment, LogError> {
        let path = segment_path(dir, base_offset, "log");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(LogError::io("create segment", &path))?;
        Ok(Segment::empty(
            SegmentFile {
                base_offset,
                file,
                path,
            },
            now_ms,
        ))
    }

    /// Bookkeeping for a newly created, empty segment file.
    pub fn empty(file: SegmentFile, now_ms: i64) -> Segment {
        let base_offset = file.base_offset;
        Segment {
            file: Arc::new(file),
            size_bytes: 0,
            visible_bytes: 0,
            next_offset: base_offset,
            index: SegmentIndex::default(),
            bytes_since_index_entry: 0,
            max_timestamp: -1,
            max_timestamp_batch: base_offset,
            created_ms: now_ms,
            verified_bytes: 0,
        }
    }

    pub fn base_offset(&self) -> Offset {
        self.file.base_offset
    }

    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// Records a batch of `header` written at byte `position` in the in-memory indexes.
    pub fn note_batch(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: u64) {
        let relative = (header.base_offset.0 - self.base_offset().0) as u32;
        if self.bytes_since_index_entry >= index_interval_bytes
            || self.index.offsets.is_empty() && position > 0
        {
            self.index.push_offset(OffsetEntry {
                relative_offset: relative,
                position: position as u32,
            });
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.size_bytes as u64;
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.max_timestamp_batch = header.base_offset;
            self.index.push_time(TimeEntry {
                timestamp: header.max_timestamp,
                relative_offset: relative,
            });
        }
        self.next_offset = header.next_offset();
        self.size_bytes = position + header.size_bytes as u64;
    }

    /// Writes the index files and syncs them: the segment is sealed.
    pub fn write_indexes(&self, dir: &Path) -> Result<(), LogError> {
        let offsets = segment_path(dir, self.base_offset(), "index");
        let times = segment_path(dir, self.base_offset(), "timeindex");
        self.index
            .write_files(&offsets, &times)
            .map_err(LogError::io("write index", offsets))
    }

    /// Removes the segment's files. Open readers keep their handle.
    pub fn delete_files(&self, dir: &Path) {
        for extension in ["log", "index", "timeindex"] {
            let path = segment_path(dir, self.base_offset(), extension);
            if let Err(error) = fs::remove_file(&path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), %error, "could not delete segment file");
                }
            }
        }
    }
}

/// What the recovery scan of a segment found.
pub struct ScanOutcome {
    /// Bytes of whole, valid batches from the start of the file.
    pub valid_bytes: u64,
    /// Why scanning stopped before the end of the file, if it did.
    pub stopped_because: Option<String>,
}

/// Opens an existing segment. Indexes come from the index files when `trust_indexes` and
/// they are sane; otherwise, and always when `validate`, the file is scanned batch by batch.
/// With `validate`, CRCs and offset continuity are checked and the scan stops at the first
/// bad or torn batch; the caller truncates there.
pub fn open_segment(
    dir: &Path,
    base_offset: Offset,
    validate: bool,
    index_interval_bytes: u64,
) -> Result<(Segment, ScanOutcome), LogError> {
    let path = segment_path(dir, base_offset, "log");
    let file = File::options()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(LogError::io("open segment", &path))?;
    let metadata = file
        .metadata()
        .map_err(LogError::io("stat segment", &path))?;
    let file_bytes = metadata.len();
    let created_ms = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    let mut segment = Segment {
        file: Arc::new(SegmentFile {
            base_offset,
            file,
            path: path.clone(),
        }),
        size_bytes: 0,
        visible_bytes: 0,
        next_offset: base_offset,
        index: SegmentIndex::default(),
        bytes_since_index_entry: 0,
        max_timestamp: -1,
        max_timestamp_batch: base_offset,
        created_ms,
        verified_bytes: 0,
    };
    let mut header_bytes = [0u8; BATCH_HEADER_BYTES];
    let mut batch_bytes = Vec::new();
    let mut position = 0u64;
    let mut stopped_because = None;
    while position < file_bytes {
        if file_bytes - position < BATCH_HEADER_BYTES as u64 {
            stopped_because = Some(format!("torn batch header at byte {position}"));
            break;
        }
        segment
            .file
            .file
            .read_exact_at(&mut header_bytes, position)
            .map_err(LogError::io("read segment", &path))?;
        let Some(header) = BatchHeader::parse(&header_bytes) else {
            stopped_because = Some(format!("impossible batch header at byte {position}"));
            break;
        };
        if position + header.size_bytes as u64 > file_bytes {
            stopped_because = Some(format!("torn batch at byte {position}"));
            break;
        }
        if validate {
            if header.magic != crate::batch::CURRENT_MAGIC {
                stopped_because = Some(format!(
                    "batch at byte {position} has magic {}",
                    header.magic
                ));
                break;
            }
            if header.base_offset < segment.next_offset || header.last_offset_delta < 0 {
                stopped_because = Some(format!(
                    "batch at byte {position} has offset {} after {}",
                    header.base_offset, segment.next_offset
                ));
                break;
            }
            batch_bytes.resize(header.size_bytes, 0);
            segment
                .file
                .file
                .read_exact_at(&mut batch_bytes, position)
                .map_err(LogError::io("read segment", &path))?;
            if !crc_matches(&batch_bytes, &header) {
                stopped_because = Some(format!("CRC mismatch in batch at byte {position}"));
                break;
            }
        }
        segment.note_batch(&header, position, index_interval_bytes);
        position += header.size_bytes as u64;
    }
    segment.visible_bytes = segment.size_bytes;
    if validate {
        segment.verified_bytes = segment.size_bytes;
    }
    Ok((
        segment,
        ScanOutcome {
            valid_bytes: position,
            stopped_because,
        },
    ))
}

/// Opens a sealed segment below the recovery point from its index files, without reading
/// the log: its data was synced and its indexes written when it was rolled. `None` when
/// the index files are missing or not sane; then the caller scans instead.
pub fn open_sealed_segment(
    dir: &Path,
    base_offset: Offset,
    next_offset: Offset,
) -> Option<Segment> {
    let path = segment_path(dir, base_offset, "log");
    let file = File::options().read(true).write(true).open(&path).ok()?;
    let metadata = file.metadata().ok()?;
    let index = SegmentIndex::read_files(
        &segment_path(dir, base_offset, "index"),
        &segment_path(dir, base_offset, "timeindex"),
        metadata.len(),
    )?;
    let (max_timestamp, max_timestamp_batch) = index.times.last().map_or((-1, base_offset), |e| {
        (e.timestamp, base_offset.plus(i64::from(e.relative_offset)))
    });
    if metadata.len() > 0 && index.times.is_empty() {
        return None;
    }
    let created_ms = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    // Compaction may have removed the last batches: the segment then ends before the next
    // one starts, and reads past its real end must move on to the next segment. Headers
    // that do not add up are left for the read-side checks to refuse (never a rescan that
    // would truncate a sealed segment).
    let last_entry_position = index.offsets.last().map_or(0, |e| u64::from(e.position));
    let next_offset = match next_offset_after(&file, last_entry_position, metadata.len()) {
        Some(found) => found.unwrap_or(base_offset).min(next_offset),
        None => next_offset,
    };
    Some(Segment {
        file: Arc::new(SegmentFile {
            base_offset,
            file,
            path,
        }),
        size_bytes: metadata.len(),
        visible_bytes: metadata.len(),
        next_offset,
        index,
        bytes_since_index_entry: 0,
        max_timestamp,
        max_timestamp_batch,
        created_ms,
        verified_bytes: 0,
    })
}

/// The offset after the last batch of `file`, scanning headers from `position` (a batch
/// boundary) to `file_bytes`; `Some(None)` when there is no batch there, `None` when the
/// headers do not add up to the file's size.
fn next_offset_after(file: &File, mut position: u64, file_bytes: u64) -> Option<Option<Offset>> {
    let mut header_bytes = [0u8; BATCH_HEADER_BYTES];
    let mut next = None;
    while position < file_bytes {
        file.read_exact_at(&mut header_bytes, position).ok()?;
        let header = BatchHeader::parse(&header_bytes)?;
        next = Some(header.next_offset());
        position += header.size_bytes as u64;
    }
    (position == file_bytes).then_some(next)
}
