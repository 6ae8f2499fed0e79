//! Log compaction: the background cleaner of logs with `cleanup.policy=compact`.
//!
//! One thread cleans one log at a time, the "filthiest" first (Kafka's `LogCleaner`):
//!
//! * Each compacted log has a *first dirty offset* (persisted in Kafka's
//!   `cleaner-offset-checkpoint`): below it the log was cleaned. Its *cleanable* range
//!   ends at the active segment, or earlier at the first dirty segment holding records
//!   newer than `min.compaction.lag.ms`. A log is taken when the dirty share of the
//!   cleanable bytes exceeds `min.cleanable.dirty.ratio`, when its oldest dirty record is
//!   older than `max.compaction.lag.ms`, or when tombstones it kept have passed their
//!   delete horizon.
//! * A round maps the dirty range's keys to their latest offsets ([`offset_map`], a byte
//!   budget: a round maps what fits and the next one continues), then rewrites every
//!   sealed segment below the mapped end in groups of up to `segment.bytes`
//!   ([`filter`] decides per batch), each group into one new segment swapped in
//!   crash-safely ([`swap`]). Offsets never change; removed records leave gaps.
//! * Reads and writes pass through one throttle (`log.cleaner.io.max.bytes.per.second`).
//! * Before a round the recovery points are checkpointed, so every rewritten segment is below
//!   the recovery point on disk: crash recovery scans only segments above it and requires
//!   them to be contiguous, which cleaned segments (with their gaps) need not be.
//!
//! Not done yet: transactions (control and transactional batches are kept whole),
//! aborting a round when a topic's policy changes mid-round (the swap re-checks that its
//! segments are current), several cleaner threads.

pub(crate) mod filter;
pub mod offset_map;
pub(crate) mod swap;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::checkpoint;
use crate::error::LogError;
use crate::log::{Log, SealedSegment};
use crate::manager::{now_ms, LogManager};
use crate::segment::SegmentFile;
use crate::types::{Offset, TopicPartition};

use filter::{filter_batch, FilterRules, Filtered};
use offset_map::OffsetMap;
use swap::CleanedSegmentWriter;

/// Kafka's file of first dirty offsets, at the top of the log directory.
pub const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";

/// Bytes read from a segment at a time (a larger batch is read whole on its own).
const READ_BUFFER_BYTES: usize = 1024 * 1024;

/// The throttle settles its account this often; shorter bursts run at full speed.
const THROTTLE_WINDOW: Duration = Duration::from_millis(300);

/// Settings of the cleaner, from the broker's `log.cleaner.*` keys.
#[derive(Clone, Debug)]
pub struct CleanerOptions {
    /// `log.cleaner.dedupe.buffer.size`: memory of the offset map.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`: reads plus writes.
    pub io_bytes_per_second_max: f64,
    /// `log.cleaner.backoff.ms`: sleep when no log needs cleaning.
    pub backoff_ms: u64,
}

impl Default for CleanerOptions {
    fn default() -> Self {
        CleanerOptions {
            dedupe_buffer_bytes: 128 * 1024 * 1024,
            io_bytes_per_second_max: f64::MAX,
            backoff_ms: 15_000,
        }
    }
}

/// What one cleaning round did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CleanStats {
    pub segments_replaced: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub keys_mapped: usize,
    /// The first dirty offset after the round.
    pub cleaned_to: Offset,
}

/// Why a round stopped early.
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error(transparent)]
    Log(#[from] LogError),
    /// Stored data the cleaner cannot parse: the log is left alone until restart.
    #[error("cannot clean {path} at byte {position}: {problem}")]
    Unreadable {
        path: PathBuf,
        position: u64,
        problem: String,
    },
    #[error("the cleaner is stopping")]
    Stopped,
}

/// Set once to stop the cleaner; wakes its sleeps.
#[derive(Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    fn is_set(&self) -> bool {
        *self.stopped.lock().expect("stop lock poisoned")
    }

    fn set(&self) {
        *self.stopped.lock().expect("stop lock poisoned") = true;
        self.wake.notify_all();
    }

    /// Sleeps up to `duration`; true when stopped.
    fn sleep(&self, duration: Duration) -> bool {
        let guard = self.stopped.lock().expect("stop lock poisoned");
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, duration, |stopped| !*stopped)
            .expect("stop lock poisoned");
        *guard
    }
}

/// Keeps the cleaner's reads and writes under a byte rate.
struct Throttler {
    bytes_per_second_max: f64,
    window_start: Instant,
    window_bytes: f64,
}

impl Throttler {
    fn new(bytes_per_second_max: f64) -> Throttler {
        Throttler {
            bytes_per_second_max,
            window_start: Instant::now(),
            window_bytes: 0.0,
        }
    }

    fn account(&mut self, bytes: usize, stop: &StopSignal) -> Result<(), CleanError> {
        if !(self.bytes_per_second_max.is_finite() && self.bytes_per_second_max > 0.0)
            || self.bytes_per_second_max == f64::MAX
        {
            return Ok(());
        }
        self.window_bytes += bytes as f64;
        let elapsed = self.window_start.elapsed();
        let owed = Duration::from_secs_f64(self.window_bytes / self.bytes_per_second_max);
        if elapsed < THROTTLE_WINDOW && owed < THROTTLE_WINDOW {
            return Ok(());
        }
        if owed > elapsed && stop.sleep(owed - elapsed) {
            return Err(CleanError::Stopped);
        }
        self.window_start = Instant::now();
        self.window_bytes = 0.0;
        Ok(())
    }
}

/// A compacted log's cleanable state, for choosing which log to clean.
struct Candidate {
    log: Arc<Log>,
    first_dirty: Offset,
    /// The offset after the last batch the round may clean.
    first_uncleanable: Offset,
    segments: Vec<SealedSegment>,
    clean_bytes: u64,
    dirty_bytes: u64,
    forced: bool,
}

impl Candidate {
    fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }
}

/// The cleaning logic, without the thread: usable directly by tests.
pub struct Cleaner {
    map: OffsetMap,
    throttler: Throttler,
    stop: Arc<StopSignal>,
    checkpoint_path: PathBuf,
    first_dirty: HashMap<TopicPartition, Offset>,
    /// Earliest delete horizon of the tombstones each log kept at its last cleaning.
    tombstone_horizons: HashMap<TopicPartition, i64>,
    /// Logs whose data the cleaner could not parse: skipped until restart, as in Kafka.
    uncleanable: HashSet<TopicPartition>,
}

impl Cleaner {
    /// A cleaner for the logs of `log_dir`, resuming from its checkpoint.
    pub fn new(options: &CleanerOptions, log_dir: &Path) -> Result<Cleaner, LogError> {
        let checkpoint_path = log_dir.join(CLEANER_CHECKPOINT);
        let first_dirty = checkpoint::read(&checkpoint_path)
            .map_err(LogError::io("read checkpoint", &checkpoint_path))?;
        Ok(Cleaner {
            map: OffsetMap::with_budget(options.dedupe_buffer_bytes),
            throttler: Throttler::new(options.io_bytes_per_second_max),
            stop: Arc::new(StopSignal::default()),
            checkpoint_path,
            first_dirty,
            tombstone_horizons: HashMap::new(),
            uncleanable: HashSet::new(),
        })
    }

    /// Cleans the log that most needs it, if any does. `Ok(None)`: nothing to do.
    pub fn clean_filthiest(
        &mut self,
        manager: &LogManager,
        now_ms: i64,
    ) -> Result<Option<(TopicPartition, CleanStats)>, CleanError> {
        let mut best: Option<Candidate> = None;
        for log in manager.all() {
            if !log.config().cleanup_compact || self.uncleanable.contains(log.topic_partition()) {
                continue;
            }
            let Ok(candidate) = self.candidate(log, now_ms) else {
                continue;
            };
            let ratio = candidate.dirty_ratio();
            let wanted =
                candidate.forced || ratio > candidate.log.config().min_cleanable_dirty_ratio;
            if wanted && best.as_ref().is_none_or(|b| ratio > b.dirty_ratio()) {
                best = Some(candidate);
            }
        }
        let Some(candidate) = best else {
            return Ok(None);
        };
        let partition = candidate.log.topic_partition().clone();
        // Recovery checks that segments above the checkpointed recovery point are contiguous,
        // which cleaned segments need not be: checkpoint first, so that every segment this
        // round rewrites (all sealed, so below the log's recovery point) is below it on disk.
        manager.checkpoint().map_err(CleanError::from)?;
        match self.clean(candidate, now_ms) {
            Ok(stats) => {
                self.write_checkpoint(manager);
                Ok(Some((partition, stats)))
            }
            Err(CleanError::Stopped) => Err(CleanError::Stopped),
            Err(error) => {
                self.uncleanable.insert(partition);
                Err(error)
            }
        }
    }

    /// Cleans `log` now if it has anything cleanable, whatever its dirty ratio.
    pub fn clean_log(&mut self, log: &Arc<Log>, now_ms: i64) -> Result<CleanStats, CleanError> {
        let candidate = self.candidate(Arc::clone(log), now_ms)?;
        self.clean(candidate, now_ms)
    }

    /// The first dirty offset recorded for `partition`.
    pub fn first_dirty_offset(&self, partition: &TopicPartition) -> Option<Offset> {
        self.first_dirty.get(partition).copied()
    }

    fn candidate(&self, log: Arc<Log>, now_ms: i64) -> Result<Candidate, LogError> {
        let config = log.config();
        let view = log.cleanable_segments()?;
        let partition = log.topic_partition();
        let first_base = view
            .sealed
            .first()
            .map_or(view.log_start_offset, |s| s.file.base_offset);
        let first_dirty = self
            .first_dirty
            .get(partition)
            .copied()
            .unwrap_or(Offset(0))
            .max(view.log_start_offset)
            .max(first_base);
        // Dirty segments holding records newer than min.compaction.lag.ms end the range.
        let lag_cut = now_ms.saturating_sub(config.min_compaction_lag_ms.max(0));
        let mut segments = Vec::new();
        for segment in view.sealed {
            let dirty = segment.next_offset > first_dirty;
            if dirty && config.min_compaction_lag_ms > 0 && segment.max_timestamp > lag_cut {
                break;
            }
            segments.push(segment);
        }
        let first_uncleanable = segments.last().map_or(first_dirty, |s| s.next_offset);
        let (clean, dirty): (Vec<&SealedSegment>, Vec<&SealedSegment>) = segments
            .iter()
            .partition(|segment| segment.next_offset <= first_dirty);
        let clean_bytes = clean.iter().map(|s| s.size_bytes).sum();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size_bytes).sum();
        let overdue = config.max_compaction_lag_ms < i64::MAX
            && dirty_bytes > 0
            && dirty.first().is_some_and(|segment| {
                first_batch_max_timestamp(&segment.file)
                    .is_some_and(|t| t < now_ms.saturating_sub(config.max_compaction_lag_ms))
            });
        let horizon_due = self
            .tombstone_horizons
            .get(partition)
            .is_some_and(|horizon| now_ms >= *horizon);
        Ok(Candidate {
            log,
            first_dirty,
            first_uncleanable,
            segments,
            clean_bytes,
            dirty_bytes,
            forced: overdue || horizon_due,
        })
    }

    fn write_checkpoint(&mut self, manager: &LogManager) {
        let live: HashSet<TopicPartition> = manager
            .all()
            .iter()
            .map(|log| log.topic_partition().clone())
            .collect();
        self.first_dirty
            .retain(|partition, _| live.contains(partition));
        if let Err(error) = checkpoint::write(&self.checkpoint_path, &self.first_dirty) {
            tracing::warn!(%error, "writing the cleaner checkpoint failed");
        }
    }

    /// One round over `candidate`: map the dirty range, rewrite the segments below its end.
    fn clean(&mut self, candidate: Candidate, now_ms: i64) -> Result<CleanStats, CleanError> {
        let log = &candidate.log;
        let config = log.config();
        let started = Instant::now();
        let mut stats = CleanStats::default();
        let mut producer_last_offsets = HashMap::new();
        let map_end = self.build_map(&candidate, &mut producer_last_offsets, &mut stats)?;
        stats.keys_mapped = self.map.len();
        let to_clean: Vec<&SealedSegment> = candidate
            .segments
            .iter()
            .filter(|segment| segment.file.base_offset < map_end)
            .collect();
        let rules = FilterRules {
            map: &self.map,
            map_end,
            now_ms,
            delete_retention_ms: config.delete_retention_ms,
            producer_last_offsets: &producer_last_offsets,
        };
        let mut earliest_horizon: Option<i64> = None;
        for group in group_by_size(&to_clean, config.segment_bytes) {
            let horizon = clean_group(
                log,
                &group,
                &rules,
                candidate.first_uncleanable,
                config.index_interval_bytes,
                (&mut self.throttler, &self.stop),
                &mut stats,
            )?;
            earliest_horizon = match (earliest_horizon, horizon) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let partition = log.topic_partition().clone();
        self.first_dirty.insert(partition.clone(), map_end);
        match earliest_horizon {
            Some(horizon) => self.tombstone_horizons.insert(partition.clone(), horizon),
            None => self.tombstone_horizons.remove(&partition),
        };
        stats.cleaned_to = map_end;
        tracing::info!(
            %partition,
            segments = stats.segments_replaced,
            bytes_read = stats.bytes_read,
            bytes_written = stats.bytes_written,
            records_read = stats.records_read,
            records_kept = stats.records_kept,
            keys = stats.keys_mapped,
            cleaned_to = map_end.0,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "cleaned log"
        );
        Ok(stats)
    }

    /// Maps the keys of the dirty range from `first_dirty`, as far as the map has room.
    /// Returns the offset after the last mapped batch.
    fn build_map(
        &mut self,
        candidate: &Candidate,
        producer_last_offsets: &mut HashMap<i64, Offset>,
        stats: &mut CleanStats,
    ) -> Result<Offset, CleanError> {
        self.map.clear();
        let mut map_end = candidate.first_dirty;
        let mut full = false;
        let dirty = candidate
            .segments
            .iter()
            .filter(|segment| segment.next_offset > candidate.first_dirty);
        for segment in dirty {
            if full {
                break;
            }
            let map = &mut self.map;
            for_each_batch(
                segment,
                (&mut self.throttler, &self.stop),
                &mut stats.bytes_read,
                |batch, header| {
                    if header.base_offset < candidate.first_dirty {
                        return Ok(true);
                    }
                    let records = header.records_count.max(0) as usize;
                    if !map.has_room_for(records) {
                        full = true;
                        return Ok(false);
                    }
                    if header.producer_id >= 0 {
                        producer_last_offsets.insert(header.producer_id, header.last_offset());
                    }
                    if !(header.is_control() || header.is_transactional()) {
                        filter::for_each_key(batch, header, |key, offset| map.put(key, offset))?;
                    }
                    map_end = header.next_offset();
                    Ok(true)
                },
            )?;
        }
        if full && map_end == candidate.first_dirty {
            return Err(CleanError::Unreadable {
                path: candidate.log.dir().to_owned(),
                position: 0,
                problem: format!(
                    "one batch has more records than log.cleaner.dedupe.buffer.size allows ({} keys)",
                    self.map.entries_max()
                ),
            });
        }
        Ok(map_end)
    }
}

/// The max timestamp of the first batch of `file`, Kafka's measure of a segment's age
/// for `max.compaction.lag.ms`.
fn first_batch_max_timestamp(file: &SegmentFile) -> Option<i64> {
    let mut header = [0u8; BATCH_HEADER_BYTES];
    file.file.read_exact_at(&mut header, 0).ok()?;
    BatchHeader::parse(&header).map(|h| h.max_timestamp)
}

/// Consecutive groups of segments of at most `segment_bytes` together (a larger segment
/// is a group alone), each spanning fewer than 2³¹ offsets (the index's relative offsets).
fn group_by_size<'a>(
    segments: &[&'a SealedSegment],
    segment_bytes: u64,
) -> Vec<Vec<&'a SealedSegment>> {
    let mut groups: Vec<Vec<&SealedSegment>> = Vec::new();
    let mut group_bytes = 0;
    for &segment in segments {
        let fits = groups.last().is_some_and(|group| {
            let base = group[0].file.base_offset;
            group_bytes + segment.size_bytes <= segment_bytes
                && segment.next_offset.0 - base.0 <= i64::from(i32::MAX)
        });
        if fits {
            groups.last_mut().expect("checked").push(segment);
            group_bytes += segment.size_bytes;
        } else {
            groups.push(vec![segment]);
            group_bytes = segment.size_bytes;
        }
    }
    groups
}

/// Calls `visit` with each whole batch of `segment` until it returns `Ok(false)`.
fn for_each_batch(
    segment: &SealedSegment,
    (throttler, stop): (&mut Throttler, &StopSignal),
    bytes_read: &mut u64,
    mut visit: impl FnMut(&Bytes, &BatchHeader) -> Result<bool, String>,
) -> Result<(), CleanError> {
    let file = &segment.file;
    let unreadable = |position: u64, problem: String| CleanError::Unreadable {
        path: file.path.clone(),
        position,
        problem,
    };
    let read = |position: u64, length: usize| -> Result<Bytes, CleanError> {
        let mut buffer = BytesMut::zeroed(length);
        file.file
            .read_exact_at(&mut buffer, position)
            .map_err(LogError::io("read segment for cleaning", &file.path))?;
        Ok(buffer.freeze())
    };
    let mut position = 0u64;
    while position < segment.size_bytes {
        if stop.is_set() {
            return Err(CleanError::Stopped);
        }
        let length = (segment.size_bytes - position).min(READ_BUFFER_BYTES as u64) as usize;
        let mut buffer = read(position, length)?;
        throttler.account(length, stop)?;
        *bytes_read += length as u64;
        let mut used = 0;
        while used < buffer.len() {
            let Some(header) = BatchHeader::parse(&buffer[used..]) else {
                if buffer.len() - used >= BATCH_HEADER_BYTES {
                    return Err(unreadable(
                        position + used as u64,
                        "bad batch header".into(),
                    ));
                }
                break;
            };
            if used + header.size_bytes > buffer.len() {
                if used > 0 {
                    break;
                }
                // A batch larger than the read buffer: read it alone.
                if position + header.size_bytes as u64 > segment.size_bytes {
                    return Err(unreadable(position, "batch runs past the segment".into()));
                }
                buffer = read(position, header.size_bytes)?;
                throttler.account(header.size_bytes, stop)?;
                *bytes_read += header.size_bytes as u64;
            }
            let batch = buffer.slice(used..used + header.size_bytes);
            if !visit(&batch, &header)
                .map_err(|problem| unreadable(position + used as u64, problem))?
            {
                return Ok(());
            }
            used += header.size_bytes;
        }
        if used == 0 {
            return Err(unreadable(
                position,
                "torn batch at the end of a sealed segment".into(),
            ));
        }
        position += used as u64;
    }
    Ok(())
}

/// Cleans one group of segments into one new segment and swaps it in. Returns the
/// earliest delete horizon of the tombstones kept.
fn clean_group(
    log: &Log,
    group: &[&SealedSegment],
    rules: &FilterRules<'_>,
    first_uncleanable: Offset,
    index_interval_bytes: u64,
    (throttler, stop): (&mut Throttler, &StopSignal),
    stats: &mut CleanStats,
) -> Result<Option<i64>, CleanError> {
    let base = group[0].file.base_offset;
    let mut writer = CleanedSegmentWriter::create(log.dir(), base, index_interval_bytes, now_ms())?;
    let mut earliest_horizon: Option<i64> = None;
    let mut write_error = None;
    let mut written_before_throttle = 0usize;
    let (mut records_read, mut records_kept, mut bytes_read) = (0u64, 0u64, 0u64);
    let outcome = (|| {
        for segment in group {
            for_each_batch(
                segment,
                (&mut *throttler, stop),
                &mut bytes_read,
                |batch, header| {
                    let last_of_round = header.next_offset() == first_uncleanable;
                    let outcome = filter_batch(batch, header, rules, last_of_round)?;
                    records_read += outcome.records_read as u64;
                    records_kept += outcome.records_kept as u64;
                    if let Some(horizon) = outcome.tombstone_horizon_ms {
                        earliest_horizon =
                            Some(earliest_horizon.map_or(horizon, |e| e.min(horizon)));
                    }
                    let bytes: &[u8] = match &outcome.filtered {
                        Filtered::Unchanged => batch,
                        Filtered::Rewritten(bytes) => bytes,
                        Filtered::Dropped => return Ok(true),
                    };
                    written_before_throttle += bytes.len();
                    if let Err(error) = writer.append(bytes) {
                        write_error = Some(error);
                        return Ok(false);
                    }
                    Ok(true)
                },
            )?;
            if let Some(error) = write_error.take() {
                return Err(CleanError::Log(error));
            }
            throttler.account(written_before_throttle, stop)?;
            stats.bytes_written += written_before_throttle as u64;
            written_before_throttle = 0;
        }
        Ok(())
    })();
    stats.records_read += records_read;
    stats.records_kept += records_kept;
    stats.bytes_read += bytes_read;
    if let Err(error) = outcome {
        writer.abandon();
        return Err(error);
    }
    let cleaned = match writer.finish() {
        Ok(cleaned) => cleaned,
        Err(error) => {
            swap::abandon_cleaned(log.dir(), base);
            return Err(error.into());
        }
    };
    let replaced: Vec<Arc<SegmentFile>> = group.iter().map(|s| Arc::clone(&s.file)).collect();
    let mut deleted = Vec::new();
    let swapped = log.replace_segments(&replaced, cleaned, || {
        deleted = swap::commit_swap(log.dir(), base, &replaced)?;
        Ok(())
    })?;
    if swapped {
        swap::remove_deleted(&deleted);
        stats.segments_replaced += group.len();
    } else {
        swap::abandon_cleaned(log.dir(), base);
        tracing::info!(partition = %log.topic_partition(), base_offset = base.0, "segments changed while cleaning: cleaned copy dropped");
    }
    Ok(earliest_horizon)
}

/// The background cleaner thread.
pub struct LogCleaner {
    stop: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
}

impl LogCleaner {
    /// Starts the cleaner over the logs of `manager`.
    pub fn start(
        manager: Arc<LogManager>,
        options: CleanerOptions,
    ) -> Result<LogCleaner, LogError> {
        let mut cleaner = Cleaner::new(&options, manager.dir())?;
        let stop = Arc::clone(&cleaner.stop);
        let backoff = Duration::from_millis(options.backoff_ms.max(1));
        let thread = std::thread::Builder::new()
            .name("karst-cleaner".into())
            .spawn(move || loop {
                if cleaner.stop.is_set() {
                    return;
                }
                let cleaned = match cleaner.clean_filthiest(&manager, now_ms()) {
                    Ok(cleaned) => cleaned.is_some(),
                    Err(CleanError::Stopped) => return,
                    Err(error) => {
                        tracing::warn!(%error, "log cleaning failed");
                        false
                    }
                };
                if !cleaned && cleaner.stop.sleep(backoff) {
                    return;
                }
            })
            .expect("spawning the cleaner thread");
        Ok(LogCleaner {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the cleaner, abandoning a round in progress (its `.cleaned` files go).
    pub fn shutdown(mut self) {
        self.stop.set();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LogCleaner {
    fn drop(&mut self) {
        self.stop.set();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
