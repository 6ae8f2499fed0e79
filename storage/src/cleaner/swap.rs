//! Writing a cleaned segment and swapping it in for the segments it replaces, crash-safe
//! (Kafka's protocol).
//!
//! 1. The cleaner writes `<base>.log.cleaned` (+ `.index.cleaned`, `.timeindex.cleaned`) and
//!    syncs them. A crash now leaves only `.cleaned` files: deleted on open, the old
//!    segments stay.
//! 2. Under the log's lock, after checking the replaced segments are still current: the
//!    `.cleaned` files are renamed to `.swap` (indexes first, the `.log` last) and the
//!    directory is synced. The `.log.swap` rename is the commit point: from here on the
//!    next open finishes the swap.
//! 3. Still under the lock: the replaced segments' files are renamed to `.deleted`, the
//!    `.swap` files to their final names (`.log` last), the directory is synced, and the
//!    segment map is updated. The `.deleted` files are unlinked after the lock is released
//!    (open readers keep their handles); the next open deletes any left over.
//!
//! Recovery of a `<base>.log.swap`: it is complete (synced before the rename), and it
//! replaces every segment whose base offset lies in `[base, its next offset)`; those are
//! deleted (they may be renamed already) and the swap files take their final names.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::error::LogError;
use crate::io::sync_directory;
use crate::segment::{segment_path, Segment, SegmentFile};
use crate::types::{Offset, TopicPartition};

const CLEANED_SUFFIX: &str = "cleaned";
const SWAP_SUFFIX: &str = "swap";
const DELETED_SUFFIX: &str = "deleted";
const SEGMENT_EXTENSIONS: [&str; 3] = ["index", "timeindex", "log"];

/// Bytes the writer gathers before one positional write.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

fn rename(from: &Path, to: &Path) -> Result<(), LogError> {
    fs::rename(from, to).map_err(LogError::io("rename", from))
}

fn remove_if_present(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(LogError::io("remove", path)(error))
        }
        _ => Ok(()),
    }
}

/// Writes one cleaned segment: batches in offset order, with its sparse indexes.
pub(crate) struct CleanedSegmentWriter {
    dir: PathBuf,
    segment: Segment,
    pending: Vec<u8>,
    index_interval_bytes: u64,
}

impl CleanedSegmentWriter {
    /// Starts `<base>.log.cleaned`, replacing a leftover of an abandoned attempt.
    pub fn create(
        dir: &Path,
        base_offset: Offset,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<CleanedSegmentWriter, LogError> {
        for extension in SEGMENT_EXTENSIONS {
            remove_if_present(&with_suffix(
                &segment_path(dir, base_offset, extension),
                CLEANED_SUFFIX,
            ))?;
        }
        let path = with_suffix(&segment_path(dir, base_offset, "log"), CLEANED_SUFFIX);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(LogError::io("create cleaned segment", &path))?;
        let segment = Segment::empty(
            SegmentFile {
                base_offset,
                file,
                path,
            },
            now_ms,
        );
        Ok(CleanedSegmentWriter {
            dir: dir.to_owned(),
            segment,
            pending: Vec::with_capacity(WRITE_BUFFER_BYTES),
            index_interval_bytes,
        })
    }

    /// Appends one whole batch (stored format, absolute base offset).
    pub fn append(&mut self, batch: &[u8]) -> Result<(), LogError> {
        let header = BatchHeader::parse(batch).expect("the cleaner appends whole batches");
        assert_eq!(header.size_bytes, batch.len(), "one whole batch per append");
        assert!(
            header.base_offset >= self.segment.next_offset,
            "cleaned batches keep increasing offsets"
        );
        let position = self.segment.size_bytes;
        self.segment
            .note_batch(&header, position, self.index_interval_bytes);
        self.pending.extend_from_slice(batch);
        if self.pending.len() >= WRITE_BUFFER_BYTES {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), LogError> {
        let start = self.segment.size_bytes - self.pending.len() as u64;
        let file = &self.segment.file;
        file.file
            .write_all_at(&self.pending, start)
            .map_err(LogError::io("write cleaned segment", &file.path))?;
        self.pending.clear();
        Ok(())
    }

    /// Writes what is buffered, syncs the `.log.cleaned`, writes and syncs its
    /// `.index.cleaned` and `.timeindex.cleaned`. The result is ready for
    /// [`commit_swap`], and carries its final `<base>.log` path.
    pub fn finish(mut self) -> Result<Segment, LogError> {
        self.write_pending()?;
        let file = &self.segment.file;
        file.file
            .sync_data()
            .map_err(LogError::io("sync cleaned segment", &file.path))?;
        let base = self.segment.base_offset();
        let index = with_suffix(&segment_path(&self.dir, base, "index"), CLEANED_SUFFIX);
        let times = with_suffix(&segment_path(&self.dir, base, "timeindex"), CLEANED_SUFFIX);
        self.segment
            .index
            .write_files(&index, &times)
            .map_err(LogError::io("write cleaned index", &index))?;
        let mut segment = self.segment;
        segment.visible_bytes = segment.size_bytes;
        // Written and synced by this process.
        segment.verified_bytes = segment.size_bytes;
        let file = Arc::try_unwrap(segment.file).expect("the writer holds the only handle");
        segment.file = Arc::new(SegmentFile {
            base_offset: base,
            file: file.file,
            path: segment_path(&self.dir, base, "log"),
        });
        Ok(segment)
    }

    /// Gives up: removes the `.cleaned` files.
    pub fn abandon(self) {
        abandon_cleaned(&self.dir, self.segment.base_offset());
    }
}

/// Removes the `.cleaned` files of a cleaned segment that will not be swapped in.
pub(crate) fn abandon_cleaned(dir: &Path, base_offset: Offset) {
    for extension in SEGMENT_EXTENSIONS {
        let path = with_suffix(&segment_path(dir, base_offset, extension), CLEANED_SUFFIX);
        if let Err(error) = remove_if_present(&path) {
            tracing::warn!(%error, "could not remove an abandoned cleaned segment file");
        }
    }
}

/// Steps 2 and 3 of the protocol for the cleaned segment at `base_offset` replacing
/// `replaced`; runs under the log's lock. Returns the `.deleted` files to unlink.
pub(crate) fn commit_swap(
    dir: &Path,
    base_offset: Offset,
    replaced: &[Arc<SegmentFile>],
) -> Result<Vec<PathBuf>, LogError> {
    for extension in SEGMENT_EXTENSIONS {
        let final_path = segment_path(dir, base_offset, extension);
        rename(
            &with_suffix(&final_path, CLEANED_SUFFIX),
            &with_suffix(&final_path, SWAP_SUFFIX),
        )?;
    }
    sync_directory(dir).map_err(LogError::io("sync directory", dir))?;
    let mut deleted = Vec::new();
    for file in replaced {
        for extension in SEGMENT_EXTENSIONS {
            let path = segment_path(dir, file.base_offset, extension);
            let doomed = with_suffix(&path, DELETED_SUFFIX);
            match fs::rename(&path, &doomed) {
                Ok(()) => deleted.push(doomed),
                // A sealed segment opened by a scan may not have index files yet.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(LogError::io("rename", &path)(error)),
            }
        }
    }
    for extension in SEGMENT_EXTENSIONS {
        let final_path = segment_path(dir, base_offset, extension);
        rename(&with_suffix(&final_path, SWAP_SUFFIX), &final_path)?;
    }
    sync_directory(dir).map_err(LogError::io("sync directory", dir))?;
    Ok(deleted)
}

/// Unlinks replaced segment files once the swap is done.
pub(crate) fn remove_deleted(paths: &[PathBuf]) {
    for path in paths {
        if let Err(error) = remove_if_present(path) {
            tracing::warn!(%error, "could not remove a replaced segment file");
        }
    }
}

/// The offset after the last whole batch of the file at `path`.
pub(crate) fn next_offset_of(path: &Path, base_offset: Offset) -> Result<Offset, LogError> {
    let file = File::open(path).map_err(LogError::io("open swap segment", path))?;
    let size = file
        .metadata()
        .map_err(LogError::io("stat swap segment", path))?
        .len();
    let mut next = base_offset;
    let mut position = 0u64;
    let mut header_bytes = [0u8; BATCH_HEADER_BYTES];
    while position + BATCH_HEADER_BYTES as u64 <= size {
        file.read_exact_at(&mut header_bytes, position)
            .map_err(LogError::io("read swap segment", path))?;
        let Some(header) = BatchHeader::parse(&header_bytes) else {
            break;
        };
        if position + header.size_bytes as u64 > size {
            break;
        }
        next = header.next_offset();
        position += header.size_bytes as u64;
    }
    Ok(next)
}

/// `<20 digits>.<rest>` -> (base offset, rest).
fn parse_name(name: &str) -> Option<(Offset, &str)> {
    let (stem, rest) = name.split_once('.')?;
    (stem.len() == 20)
        .then(|| stem.parse().ok())
        .flatten()
        .map(|base| (Offset(base), rest))
}

/// Runs before a log directory is opened: deletes `.cleaned` and `.deleted` leftovers and
/// finishes every swap whose `.log.swap` was committed.
pub(crate) fn complete_interrupted_swaps(
    dir: &Path,
    partition: &TopicPartition,
) -> Result<(), LogError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(LogError::io("list log directory", dir))? {
        let entry = entry.map_err(LogError::io("list log directory", dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    let mut changed = false;
    let mut swaps = Vec::new();
    let mut logs = Vec::new();
    for name in &names {
        let Some((base, rest)) = parse_name(name) else {
            continue;
        };
        if rest.ends_with(CLEANED_SUFFIX) || rest.ends_with(DELETED_SUFFIX) {
            remove_if_present(&dir.join(name))?;
            changed = true;
        } else if rest == "log.swap" {
            swaps.push(base);
        } else if rest == "log" {
            logs.push(base);
        }
    }
    swaps.sort();
    for &base in &swaps {
        let swap = with_suffix(&segment_path(dir, base, "log"), SWAP_SUFFIX);
        let next = next_offset_of(&swap, base)?;
        tracing::warn!(
            %partition,
            base_offset = base.0,
            next_offset = next.0,
            "recovery: completing an interrupted swap of a cleaned segment"
        );
        for &old in logs
            .iter()
            .filter(|old| **old >= base && (**old < next || **old == base))
        {
            for extension in SEGMENT_EXTENSIONS {
                remove_if_present(&segment_path(dir, old, extension))?;
            }
        }
        for extension in SEGMENT_EXTENSIONS {
            let final_path = segment_path(dir, base, extension);
            let swap_path = with_suffix(&final_path, SWAP_SUFFIX);
            if swap_path.exists() {
                rename(&swap_path, &final_path)?;
            }
        }
        changed = true;
    }
    // Index `.swap` files without a committed `.log.swap` belong to a swap that never
    // reached its commit point.
    for name in &names {
        if let Some((base, rest)) = parse_name(name) {
            if rest.ends_with(SWAP_SUFFIX) && !swaps.contains(&base) {
                remove_if_present(&dir.join(name))?;
                changed = true;
            }
        }
    }
    if changed {
        sync_directory(dir).map_err(LogError::io("sync directory", dir))?;
    }
    Ok(())
}
