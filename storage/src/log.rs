//! A partition log: ordered segments, offsets (log start, high watermark, log end), the
//! append plan used by the committer, reads for fetch and ListOffsets, retention, recovery.
//!
//! Concurrency: one committer thread appends to a given log (logs are sharded over
//! committer threads), readers run on any thread. All bookkeeping sits behind one short
//! `Mutex`; file I/O happens outside it. Appends reserve positions under the lock and write
//! after; readers never look past `visible_bytes`/`durable_end_offset`, which only advance once
//! the data is durable (or written, for logs that do not sync before acknowledging).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::{Bytes, BytesMut};

use crate::batch::{BatchHeader, ValidBatch, BATCH_HEADER_BYTES, REWRITTEN_PREFIX_BYTES};
use crate::config::LogConfig;
use crate::epoch_cache::{EpochCache, EpochEnd};
use crate::error::LogError;
use crate::io::{sync_directory, IoBackend};
use crate::producer_state::recovery::{rebuild, RebuildSource};
use crate::producer_state::{snapshot, ProducerEntry, ProducerStateManager, Verdict};
use crate::segment::{open_sealed_segment, open_segment, Segment, SegmentFile};
use crate::types::{LeaderEpoch, Offset, ProducerId, TopicPartition};

/// Bytes for a fetch response: read into memory, or a region of a segment file to send
/// with `sendfile`.
pub enum ReadData {
    Bytes(Bytes),
    File {
        file: Arc<SegmentFile>,
        position: u64,
        length: usize,
    },
}

impl ReadData {
    pub fn len(&self) -> usize {
        match self {
            ReadData::Bytes(bytes) => bytes.len(),
            ReadData::File { length, .. } => *length,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the log knows of its offsets. Which of them a reader may see (the high watermark,
/// later the last stable offset) is decided by replication, not here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start_offset: Offset,
    /// End of what is durable and readable: synced (or, for logs in flush-interval mode,
    /// written). Followers report this end to their leader.
    pub durable_end_offset: Offset,
    /// Offset the next appended record gets.
    pub log_end_offset: Offset,
}

/// How the previous run ended, from the log directory's checkpoints.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecoveryHint {
    /// Everything below this offset was synced with its indexes written.
    pub recovery_point: Option<Offset>,
    pub log_start_offset: Option<Offset>,
    /// The previous run closed the logs cleanly: no scan needed beyond the last segment.
    pub clean_shutdown: bool,
}

/// The result of one append, given to the producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker's timestamp when the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: Offset,
}

/// Who is appending: the leader assigns offsets and stamps its epoch; a follower copies the
/// leader's batches with the offsets and epochs they carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOrigin {
    Leader(LeaderEpoch),
    Replica,
}

/// An append whose offsets and file positions are reserved, not yet written: what the
/// committer turns into I/O jobs.
pub(crate) struct WritePlan {
    pub info: AppendInfo,
    pub end_offset: Offset,
    /// Per segment file written, in order: the file, the start position, the buffers.
    pub pieces: Vec<(Arc<SegmentFile>, u64, Vec<Bytes>)>,
    pub created_segment: bool,
    pub needs_sync: bool,
}

/// The log's append state before a group's first plan, to undo the group's reservations
/// when its write fails for lack of space.
pub(crate) struct RollbackPoint {
    active_base: Offset,
    size_bytes: u64,
    next_offset: Offset,
    index_offsets: usize,
    index_times: usize,
    bytes_since_index_entry: u64,
    max_timestamp: i64,
    max_timestamp_batch: Offset,
    messages_since_flush: i64,
}

struct LogState {
    segments: BTreeMap<Offset, Segment>,
    epochs: EpochCache,
    /// Everything below this offset is synced. A roll inside a group's plan makes the new
    /// segment active before the old one's tail is synced: the recovery point must not pass
    /// this, or a checkpoint taken then (and a crash) would trust an unsynced tail.
    synced_end_offset: Offset,
    log_start_offset: Offset,
    durable_end_offset: Offset,
    messages_since_flush: i64,
    last_flush_ms: i64,
    offline: Option<String>,
    /// Base offset of the segment in which a read found a batch failing its CRC check: the
    /// log went offline for it, and a replica that has healthy copies elsewhere may cut
    /// its log back to there and fetch again ([`Log::repair_corruption`]).
    corrupt_segment: Option<Offset>,
    /// Idempotent producers' epochs and newest batches, changed with the offsets they
    /// claim (see `producer_state`).
    producers: ProducerStateManager,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn log_end_offset(&self) -> Offset {
        self.active().next_offset
    }

    fn check_online(&self) -> Result<(), LogError> {
        match &self.offline {
            Some(reason) => Err(LogError::Offline(reason.clone())),
            None => Ok(()),
        }
    }

    /// The segment holding `offset`, or the first one after it (offsets may have gaps).
    fn segment_for(&self, offset: Offset) -> Option<&Segment> {
        let candidate = self.segments.range(..=offset).next_back().map(|(_, s)| s);
        match candidate {
            Some(segment) if segment.next_offset > offset => Some(segment),
            // Compaction can leave segments empty: skip to one that holds a later offset.
            _ => self
                .segments
                .range(offset..)
                .map(|(_, s)| s)
                .find(|s| !s.is_empty() && s.next_offset > offset),
        }
    }
}

pub struct Log {
    partition: TopicPartition,
    dir: PathBuf,
    config: RwLock<Arc<LogConfig>>,
    state: Mutex<LogState>,
}

/// A readable window of one segment file.
struct ReadWindow {
    file: Arc<SegmentFile>,
    /// The first offset the reader may not see (its upper bound, at most the durable end
    /// when the window was taken): no served batch may reach past it.
    read_bound: Offset,
    /// The bound lies below the durable end: the window's end must be cut at it.
    bound_below_end: bool,
    /// The segment's verified prefix (see `Segment::verified_bytes`).
    verified_bytes: u64,
    start_position: u64,
    end_position: u64,
}

/// Extra bytes read past `max_bytes` so the batch holding the fetch offset is found in the
/// same read as the data after it (index entries are `index.interval.bytes` apart).
const READ_SLACK_BYTES: usize = 8 * 1024;

impl Log {
    /// Opens (recovering) or creates the log in `dir`.
    pub fn open(
        dir: PathBuf,
        partition: TopicPartition,
        config: LogConfig,
        hint: RecoveryHint,
        now_ms: i64,
    ) -> Result<Log, LogError> {
        fs::create_dir_all(&dir).map_err(LogError::io("create log directory", &dir))?;
        crate::cleaner::swap::complete_interrupted_swaps(&dir, &partition)?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir).map_err(LogError::io("list log directory", &dir))? {
            let entry = entry.map_err(LogError::io("list log directory", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(Offset(base));
                }
            }
        }
        bases.sort();
        let mut segments = BTreeMap::new();
        let recovery_point = hint.recovery_point.unwrap_or(Offset(0));
        for (position, &base) in bases.iter().enumerate() {
            let next_base = bases.get(position + 1).copied();
            let below_recovery_point =
                next_base.is_some_and(|next| hint.clean_shutdown || next <= recovery_point);
            if let (true, Some(next)) = (below_recovery_point, next_base) {
                if let Some(segment) = open_sealed_segment(&dir, base, next) {
                    segments.insert(base, segment);
                    continue;
                }
            }
            let validate = !hint.clean_shutdown;
            let (mut segment, outcome) =
                open_segment(&dir, base, validate, config.index_interval_bytes)?;
            // A segment recovered here was only ever appended to (the cleaner rewrites
            // segments only below the checkpointed recovery point), so it must end where the
            // next one begins. One that ends short lost its tail in a crash while a later
            // segment's writes reached the disk (a group spanning a roll writes both files at
            // once): keeping the later segments would leave a hole of offsets in the log.
            // Without a recovery point a compacted log may hold cleaned segments with
            // legitimate gaps here, so it is not checked.
            let checkable = validate && (hint.recovery_point.is_some() || !config.cleanup_compact);
            let ends_short_of = next_base.filter(|&next| checkable && segment.next_offset < next);
            let log_ends_here = if let Some(reason) = outcome.stopped_because {
                // A bad batch with later segments behind it is not a torn tail: data that
                // was synced is gone or damaged. Say so loudly; a follower refetches what
                // it loses from its leader, a leader's loss shows in this metric and log.
                let interior = position + 1 < bases.len();
                metrics::counter!(
                    "karst_log_recovery_truncations_total",
                    "kind" => if interior { "interior" } else { "tail" }
                )
                .increment(1);
                if interior {
                    tracing::error!(
                        %partition,
                        path = %segment.file.path.display(),
                        reason,
                        valid_bytes = outcome.valid_bytes,
                        later_segments = bases.len() - position - 1,
                        "recovery: a bad batch INSIDE the log; truncating there drops later segments"
                    );
                } else {
                    tracing::warn!(
                        %partition,
                        path = %segment.file.path.display(),
                        reason,
                        valid_bytes = outcome.valid_bytes,
                        "recovery: truncating the log after the last valid batch"
                    );
                }
                segment
                    .file
                    .file
                    .set_len(outcome.valid_bytes)
                    .and_then(|()| segment.file.file.sync_all())
                    .map_err(LogError::io("truncate segment", &segment.file.path))?;
                segment.size_bytes = outcome.valid_bytes;
                segment.visible_bytes = outcome.valid_bytes;
                true
            } else if let Some(next) = ends_short_of {
                tracing::warn!(
                    %partition,
                    path = %segment.file.path.display(),
                    ends_at = segment.next_offset.0,
                    next_segment_base = next.0,
                    "recovery: segment ends before the next one begins; the log ends here"
                );
                true
            } else {
                false
            };
            if log_ends_here {
                segments.insert(base, segment);
                for &later in &bases[position + 1..] {
                    tracing::warn!(%partition, base_offset = later.0, "recovery: deleting segment after the end of the recovered log");
                    let (later_segment, _) =
                        open_segment(&dir, later, false, config.index_interval_bytes)?;
                    later_segment.delete_files(&dir);
                }
                break;
            }
            if next_base.is_some() {
                segment.write_indexes(&dir)?;
            }
            segments.insert(base, segment);
        }
        if segments.is_empty() {
            let base = hint.log_start_offset.unwrap_or(Offset(0));
            segments.insert(base, Segment::create(&dir, base, now_ms)?);
            sync_directory(&dir).map_err(LogError::io("sync directory", &dir))?;
        }
        let first_base = *segments.keys().next().expect("not empty");
        let log_end_offset = segments
            .values()
            .next_back()
            .expect("not empty")
            .next_offset;
        let log_start_offset = hint
            .log_start_offset
            .unwrap_or(first_base)
            .max(first_base)
            .min(log_end_offset);
        let epochs = EpochCache::open(&dir, log_end_offset)
            .map_err(LogError::io("open leader-epoch-checkpoint", &dir))?;
        let producers = rebuild(&RebuildSource {
            partition: &partition,
            dir: &dir,
            segments: &segments,
            log_end_offset,
            now_ms,
            expiration_ms: config.producer_id_expiration_ms,
        })?;
        Ok(Log {
            partition,
            dir,
            config: RwLock::new(Arc::new(config)),
            state: Mutex::new(LogState {
                segments,
                epochs,
                synced_end_offset: log_end_offset,
                log_start_offset,
                durable_end_offset: log_end_offset,
                messages_since_flush: 0,
                last_flush_ms: now_ms,
                offline: None,
                corrupt_segment: None,
                producers,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().expect("log state lock poisoned")
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.partition
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> Arc<LogConfig> {
        Arc::clone(&self.config.read().expect("config lock poisoned"))
    }

    pub fn set_config(&self, config: LogConfig) {
        *self.config.write().expect("config lock poisoned") = Arc::new(config);
    }

    pub fn offsets(&self) -> LogOffsets {
        let state = self.lock();
        LogOffsets {
            log_start_offset: state.log_start_offset,
            durable_end_offset: state.durable_end_offset,
            log_end_offset: state.log_end_offset(),
        }
    }

    /// Bytes of all segments.
    /// Where leader epoch `epoch` ended in this log (OffsetForLeaderEpoch), measured
    /// against the log end offset.
    pub fn end_for_epoch(&self, epoch: LeaderEpoch) -> EpochEnd {
        let state = self.lock();
        state.epochs.end_for(epoch, state.log_end_offset())
    }

    /// The newest leader epoch that wrote to this log.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.lock().epochs.latest_epoch()
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock().segments.values().map(|s| s.size_bytes).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }

    /// `Some(reason)` when the log stopped serving after a failed write or sync.
    pub fn offline_reason(&self) -> Option<String> {
        self.lock().offline.clone()
    }

    /// Whether the log serves reads and appends (see [`Log::offline_reason`]).
    pub fn is_online(&self) -> bool {
        self.lock().offline.is_none()
    }

    /// Takes the log offline: every later append and read fails with `reason`.
    pub fn take_offline(&self, reason: String) {
        Self::take_offline_locked(&self.partition, &mut self.lock(), reason);
    }

    fn take_offline_locked(partition: &TopicPartition, state: &mut LogState, reason: String) {
        if state.offline.is_none() {
            tracing::warn!(%partition, reason, "log is going offline");
            state.offline = Some(reason);
        }
    }

    /// Where [`Log::repair_corruption`] would cut this log back to: the base offset of the
    /// segment whose damaged batch took it offline, if that is why it is offline.
    pub fn corrupt_segment(&self) -> Option<Offset> {
        let state = self.lock();
        state.offline.as_ref().and(state.corrupt_segment)
    }

    /// Brings a log that went offline for a damaged batch back, without the damage: removes
    /// the damaged segment and everything after it, so the log ends at that segment's base
    /// offset, and clears the offline state. Only for a replica whose records exist
    /// elsewhere (a follower outside the ISR, which fetches them again): on its own it is
    /// data loss. Returns the new log end offset. Use `LogManager::repair_corruption`,
    /// which checkpoints a lowered log start.
    pub fn repair_corruption(&self) -> Result<Offset, LogError> {
        let config = self.config();
        let mut state = self.lock();
        let Some(base) = state.offline.as_ref().and(state.corrupt_segment) else {
            return Err(LogError::Offline(format!(
                "{} is not offline for a damaged batch: nothing to repair",
                self.partition
            )));
        };
        tracing::warn!(partition = %self.partition, from = base.0, "repairing a damaged log: removing the damaged segment and every later one");
        self.truncate_locked(&mut state, &config, base)?;
        state.offline = None;
        state.corrupt_segment = None;
        Ok(state.log_end_offset())
    }

    /// Reserves offsets and file positions for `batches` (no I/O but for a roll). Called only
    /// by the committer thread that owns this log.
    pub(crate) fn plan(
        &self,
        batches: Vec<ValidBatch>,
        origin: AppendOrigin,
        now_ms: i64,
    ) -> Result<WritePlan, LogError> {
        let config = self.config();
        // Record checks and recompression happen here, on the log's storage thread, before
        // anything is reserved: a refusal leaves no trace.
        let batches = match origin {
            AppendOrigin::Leader(_) => {
                crate::validator::prepare_produced(batches, &config, &self.partition, now_ms)?
            }
            AppendOrigin::Replica => batches,
        };
        let mut pieces: Vec<(Arc<SegmentFile>, u64, Vec<Bytes>)> = Vec::new();
        let mut created_segment = false;
        let mut state = self.lock();
        state.check_online()?;
        // Idempotent producers: every batch is judged before anything is reserved, so a
        // refused request leaves no trace; duplicates are answered, not written.
        // A follower copies the leader's batches as they are: the leader judged them, and
        // update_from_batch (below, for every batch written) keeps this replica's state.
        let verdicts = match origin {
            AppendOrigin::Leader(_) => state
                .producers
                .check_client_batches(batches.iter().map(|batch| &batch.header))?,
            AppendOrigin::Replica => batches.iter().map(|_| Verdict::Append).collect(),
        };
        let mut first_offset = None;
        // The last batch was a duplicate: its original (offsets, append time) answers.
        let mut last_duplicate = None;
        let mut records = 0;
        for (batch, verdict) in batches.into_iter().zip(verdicts) {
            if let Verdict::Duplicate(original) = verdict {
                first_offset.get_or_insert(original.base_offset);
                last_duplicate = Some(original);
                continue;
            }
            last_duplicate = None;
            let epoch = match origin {
                AppendOrigin::Leader(epoch) => epoch,
                AppendOrigin::Replica => batch.header.leader_epoch,
            };
            let active = state.active();
            let too_big = active.size_bytes + batch.header.size_bytes as u64 > config.segment_bytes;
            let too_old = now_ms - active.created_ms >= config.segment_ms;
            if !active.is_empty() && (too_big || too_old) {
                self.roll_locked(&mut state, now_ms)?;
                created_segment = true;
            }
            let next_offset = state.log_end_offset();
            let base_offset = match origin {
                AppendOrigin::Leader(_) => next_offset,
                // The leader's offsets are kept; they may skip (a compacted leader log) but
                // never go back.
                AppendOrigin::Replica if batch.header.base_offset >= next_offset => {
                    batch.header.base_offset
                }
                AppendOrigin::Replica => {
                    return Err(LogError::OutOfOrder(format!(
                        "replicated batch at offset {} but the log ends at {}",
                        batch.header.base_offset, next_offset
                    )))
                }
            };
            if state.epochs.latest_epoch() != Some(epoch) {
                // Persisted before the batch is written: every epoch in the log is known.
                state.epochs.assign(epoch, base_offset).map_err(|error| {
                    if error.kind() == std::io::ErrorKind::InvalidInput {
                        LogError::OutOfOrder(error.to_string())
                    } else {
                        LogError::Io {
                            operation: "write leader-epoch-checkpoint",
                            path: self.dir.clone(),
                            source: error,
                        }
                    }
                })?;
            }
            let active = state.active_mut();
            let position = active.size_bytes;
            let mut header = batch.header;
            header.base_offset = base_offset;
            active.note_batch(&header, position, config.index_interval_bytes);
            state.producers.update_from_batch(&header);
            let active = state.active_mut();
            first_offset.get_or_insert(base_offset);
            records += batch.records_count();
            let prefix = Bytes::copy_from_slice(&batch.rewritten_prefix(base_offset, epoch));
            let body = batch.bytes.slice(REWRITTEN_PREFIX_BYTES..);
            match pieces.last_mut() {
                Some((file, _, buffers)) if Arc::ptr_eq(file, &active.file) => {
                    buffers.extend([prefix, body])
                }
                _ => pieces.push((Arc::clone(&active.file), position, vec![prefix, body])),
            }
        }
        let end_offset = state.log_end_offset();
        state.messages_since_flush += records;
        let needs_sync = config.sync_before_ack()
            || state.messages_since_flush >= config.flush_messages
            || now_ms.saturating_sub(state.last_flush_ms) >= config.flush_ms;
        if needs_sync {
            state.messages_since_flush = 0;
            state.last_flush_ms = now_ms;
        }
        Ok(WritePlan {
            info: AppendInfo {
                base_offset: first_offset.unwrap_or(end_offset),
                last_offset: last_duplicate.map_or(end_offset.plus(-1), |d| d.last_offset),
                log_append_time_ms: match (config.log_append_time, last_duplicate) {
                    (false, _) => -1,
                    // The original batch was stamped with its append time.
                    (true, Some(original)) => original.max_timestamp_ms,
                    (true, None) => now_ms,
                },
                log_start_offset: state.log_start_offset,
            },
            end_offset,
            pieces,
            created_segment,
            needs_sync,
        })
    }

    /// Where the next plan starts from, for [`Log::rollback`].
    pub(crate) fn rollback_point(&self) -> RollbackPoint {
        let mut state = self.lock();
        state.producers.begin_group();
        let active = state.active();
        RollbackPoint {
            active_base: active.base_offset(),
            size_bytes: active.size_bytes,
            next_offset: active.next_offset,
            index_offsets: active.index.offsets.len(),
            index_times: active.index.times.len(),
            bytes_since_index_entry: active.bytes_since_index_entry,
            max_timestamp: active.max_timestamp,
            max_timestamp_batch: active.max_timestamp_batch,
            messages_since_flush: state.messages_since_flush,
        }
    }

    /// Undoes every reservation made since `point`: segments created since are deleted and
    /// the active segment is cut back (file and bookkeeping), so nothing half-written can
    /// be read or mistaken for data by a later recovery. If even that fails, the log goes
    /// offline.
    pub(crate) fn rollback(&self, point: &RollbackPoint) {
        let mut state = self.lock();
        let newer: Vec<Offset> = state
            .segments
            .range(point.active_base.plus(1)..)
            .map(|(base, _)| *base)
            .collect();
        for base in newer {
            let segment = state.segments.remove(&base).expect("listed above");
            segment.delete_files(&self.dir);
        }
        let Some(active) = state.segments.get_mut(&point.active_base) else {
            drop(state);
            self.take_offline(format!(
                "rollback found no segment at {}",
                point.active_base
            ));
            return;
        };
        active.size_bytes = point.size_bytes;
        active.visible_bytes = active.visible_bytes.min(point.size_bytes);
        active.next_offset = point.next_offset;
        active.index.offsets.truncate(point.index_offsets);
        active.index.times.truncate(point.index_times);
        active.bytes_since_index_entry = point.bytes_since_index_entry;
        active.max_timestamp = point.max_timestamp;
        active.max_timestamp_batch = point.max_timestamp_batch;
        let file = Arc::clone(&active.file);
        state.messages_since_flush = point.messages_since_flush;
        state.producers.undo_group();
        drop(state);
        // A roll in the undone group wrote a snapshot of offsets that are gone again.
        if let Err(error) = snapshot::delete_where(&self.dir, |offset| offset > point.next_offset) {
            tracing::warn!(partition = %self.partition, %error, "could not remove producer snapshots of an undone append");
        }
        if let Err(error) = file
            .file
            .set_len(point.size_bytes)
            .and_then(|()| file.file.sync_all())
        {
            self.take_offline(format!(
                "could not cut {} back to {} bytes after a failed write: {error}",
                file.path.display(),
                point.size_bytes
            ));
        }
    }

    /// Makes a written (and, if it needed it, synced) plan visible to readers and advances
    /// the high watermark.
    pub(crate) fn publish(&self, plan: &WritePlan) {
        let mut state = self.lock();
        for (file, position, buffers) in &plan.pieces {
            let end = position + buffers.iter().map(|b| b.len() as u64).sum::<u64>();
            if let Some(segment) = state.segments.get_mut(&file.base_offset) {
                segment.visible_bytes = segment.visible_bytes.max(end);
                // What this process wrote is what the page cache holds.
                if segment.verified_bytes >= *position {
                    segment.verified_bytes = segment.verified_bytes.max(end);
                }
            }
        }
        state.durable_end_offset = state.durable_end_offset.max(plan.end_offset);
        if plan.needs_sync {
            state.synced_end_offset = state.synced_end_offset.max(plan.end_offset);
        }
    }

    /// Seals the active segment (indexes written and synced) and starts a new one.
    fn roll_locked(&self, state: &mut LogState, now_ms: i64) -> Result<(), LogError> {
        let next_offset = state.log_end_offset();
        state.active().write_indexes(&self.dir)?;
        snapshot::write(&self.dir, next_offset, &state.producers)?;
        let segment = Segment::create(&self.dir, next_offset, now_ms)?;
        state.segments.insert(next_offset, segment);
        Ok(())
    }

    /// Where to read `offset` from for a reader that may not see `upper_bound` or beyond,
    /// or why not. Offsets up to the durable end are in range; at or past the bound there is
    /// nothing to read yet.
    fn window_for(
        &self,
        offset: Offset,
        upper_bound: Offset,
    ) -> Result<Option<ReadWindow>, LogError> {
        let state = self.lock();
        state.check_online()?;
        if offset < state.log_start_offset || offset > state.durable_end_offset {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: state.log_start_offset,
                end_offset: state.durable_end_offset,
            });
        }
        let read_bound = upper_bound.min(state.durable_end_offset);
        if offset >= read_bound {
            return Ok(None);
        }
        let Some(segment) = state.segment_for(offset) else {
            return Ok(None);
        };
        let relative = (offset.0 - segment.base_offset().0).max(0) as u32;
        Ok(Some(ReadWindow {
            read_bound,
            bound_below_end: read_bound < state.durable_end_offset,
            verified_bytes: segment.verified_bytes,
            file: Arc::clone(&segment.file),
            start_position: u64::from(segment.index.position_for(relative)),
            end_position: segment.visible_bytes,
        }))
    }

    /// Reads whole batches starting with the one that holds `offset`, up to `max_bytes`
    /// (but always the first batch, however large, so consumers make progress), none of
    /// them reaching `upper_bound` (the reader's high watermark; `Offset::MAX` for all that
    /// is durable). Reading at the bound gives empty bytes.
    pub fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        upper_bound: Offset,
    ) -> Result<Bytes, LogError> {
        let Some(window) = self.bounded_window(offset, max_bytes, upper_bound)? else {
            return Ok(Bytes::new());
        };
        let path = window.file.path.clone();
        let available = window.end_position.saturating_sub(window.start_position) as usize;
        let length = available.min(max_bytes.saturating_add(READ_SLACK_BYTES));
        let mut buffer = BytesMut::zeroed(length);
        window
            .file
            .file
            .read_exact_at(&mut buffer, window.start_position)
            .map_err(LogError::io("read segment", &path))?;
        let buffer = buffer.freeze();
        // Skip batches that end before `offset`.
        let mut position = 0;
        loop {
            let Some(header) = BatchHeader::parse(&buffer[position..]) else {
                // The batch holding `offset` starts beyond this read: read from its start.
                return self.read_from_position(
                    &window,
                    window.start_position + position as u64,
                    max_bytes,
                );
            };
            if header.next_offset() > offset {
                break;
            }
            position += header.size_bytes;
            if position >= buffer.len() {
                return self.read_from_position(
                    &window,
                    window.start_position + position as u64,
                    max_bytes,
                );
            }
        }
        let end = whole_batches_end(&buffer[position..], max_bytes);
        if end == 0 {
            return self.read_from_position(
                &window,
                window.start_position + position as u64,
                max_bytes,
            );
        }
        // Verify the skipped batches too: a damaged header there (say, a flipped sign of
        // lastOffsetDelta) would otherwise silently skip data.
        self.verify(&buffer[..position + end], &window, window.start_position)?;
        Ok(buffer.slice(position..position + end))
    }

    /// Checks the CRC of every batch about to be served. A mismatch means the disk returned
    /// something other than what was synced: the batch is never served, and the log goes
    /// offline, loudly, naming the file and position.
    fn verify(
        &self,
        records: &[u8],
        window: &ReadWindow,
        start_position: u64,
    ) -> Result<(), LogError> {
        let file = &window.file;
        let mut offset_in_records = 0;
        let mut previous_end = Offset(i64::MIN);
        while let Some(header) = BatchHeader::parse(&records[offset_in_records..]) {
            let batch = &records[offset_in_records..];
            // The prefix (base offset, length, leader epoch) is outside the CRC: check that
            // offsets rise and stay below the high watermark instead.
            let offsets_sane = header.magic == crate::batch::CURRENT_MAGIC
                && header.base_offset >= previous_end
                && header.last_offset_delta >= 0
                && header.next_offset() <= window.read_bound;
            previous_end = header.next_offset();
            if !offsets_sane || !crate::batch::crc_matches(batch, &header) {
                let position = start_position + offset_in_records as u64;
                return Err(self.damaged(
                    file,
                    position,
                    format!(
                        "CRC mismatch or impossible offsets in stored batch at offset {}",
                        header.base_offset
                    ),
                ));
            }
            offset_in_records += header.size_bytes;
            if offset_in_records >= records.len() {
                break;
            }
        }
        self.note_verified(
            window,
            start_position,
            start_position + offset_in_records.min(records.len()) as u64,
        );
        Ok(())
    }

    /// A read found damage at `position` of `file` (a batch failing its check, or no batch
    /// header where one must start): the log goes offline, loudly, naming the file and
    /// position, and remembers the damaged segment for [`Log::repair_corruption`].
    fn damaged(&self, file: &SegmentFile, position: u64, what: String) -> LogError {
        let mut state = self.lock();
        if state.offline.is_none() {
            state.corrupt_segment = Some(file.base_offset);
        }
        let reason = format!(
            "{what} ({} byte {position}): the disk returned corrupt data",
            file.path.display()
        );
        Self::take_offline_locked(&self.partition, &mut state, reason);
        LogError::Corrupt {
            path: file.path.clone(),
            position,
        }
    }

    /// Extends a segment's verified prefix after a successful check of `[start, end)`.
    fn note_verified(&self, window: &ReadWindow, start: u64, end: u64) {
        if start > window.verified_bytes {
            return;
        }
        let mut state = self.lock();
        if let Some(segment) = state.segments.get_mut(&window.file.base_offset) {
            if Arc::ptr_eq(&segment.file, &window.file) && segment.verified_bytes >= start {
                segment.verified_bytes = segment.verified_bytes.max(end);
            }
        }
    }

    /// Like [`Log::read`], but when the bytes to send lie in the segment's verified prefix
    /// it returns the file region instead of reading it, for `sendfile`. The region starts
    /// at the batch holding `offset` and is at most `max_bytes` (at least that first batch);
    /// it may end inside a batch, which consumers discard, as with Kafka.
    pub fn read_for_send(
        &self,
        offset: Offset,
        max_bytes: usize,
        upper_bound: Offset,
    ) -> Result<ReadData, LogError> {
        let Some(window) = self.bounded_window(offset, max_bytes, upper_bound)? else {
            return Ok(ReadData::Bytes(Bytes::new()));
        };
        let limit = window.end_position.min(
            window
                .start_position
                .saturating_add(max_bytes as u64 + READ_SLACK_BYTES as u64),
        );
        if window.verified_bytes < limit {
            return self
                .read(offset, max_bytes, upper_bound)
                .map(ReadData::Bytes);
        }
        let path = &window.file.path;
        let mut header_bytes = [0u8; BATCH_HEADER_BYTES];
        let mut position = window.start_position;
        loop {
            if position >= window.end_position {
                return Ok(ReadData::Bytes(Bytes::new()));
            }
            window
                .file
                .file
                .read_exact_at(&mut header_bytes, position)
                .map_err(LogError::io("read segment", path))?;
            let header = BatchHeader::parse(&header_bytes).ok_or_else(|| {
                self.damaged(&window.file, position, "no valid batch header".to_owned())
            })?;
            if header.next_offset() > offset {
                let available = window.end_position - position;
                let wanted = (max_bytes as u64).max(header.size_bytes as u64);
                let length = available.min(wanted) as usize;
                if position + length as u64 > window.verified_bytes {
                    return self
                        .read(offset, max_bytes, upper_bound)
                        .map(ReadData::Bytes);
                }
                return Ok(ReadData::File {
                    file: Arc::clone(&window.file),
                    position,
                    length,
                });
            }
            position += header.size_bytes as u64;
        }
    }

    /// The window for `offset`, its end cut after the last batch below the reader's bound
    /// when that bound lies below the durable end (a consumer reading under the high
    /// watermark). The cut walks batch headers from the window's start, no further than the
    /// bytes a read of `max_bytes` could return.
    fn bounded_window(
        &self,
        offset: Offset,
        max_bytes: usize,
        upper_bound: Offset,
    ) -> Result<Option<ReadWindow>, LogError> {
        let Some(mut window) = self.window_for(offset, upper_bound)? else {
            return Ok(None);
        };
        if !window.bound_below_end {
            return Ok(Some(window));
        }
        let path = &window.file.path;
        let walk_limit = (max_bytes as u64).saturating_add(READ_SLACK_BYTES as u64);
        let mut header_bytes = [0u8; BATCH_HEADER_BYTES];
        let mut position = window.start_position;
        let mut passed_offset = false;
        while position < window.end_position {
            window
                .file
                .file
                .read_exact_at(&mut header_bytes, position)
                .map_err(LogError::io("read segment", path))?;
            let Some(header) = BatchHeader::parse(&header_bytes) else {
                break;
            };
            if header.next_offset() > window.read_bound {
                break;
            }
            passed_offset |= header.next_offset() > offset;
            position += header.size_bytes as u64;
            if passed_offset && position - window.start_position >= walk_limit {
                break;
            }
        }
        window.end_position = position.min(window.end_position);
        Ok(Some(window))
    }

    /// Reads whole batches from a batch boundary at `position`.
    fn read_from_position(
        &self,
        window: &ReadWindow,
        position: u64,
        max_bytes: usize,
    ) -> Result<Bytes, LogError> {
        if position >= window.end_position {
            return Ok(Bytes::new());
        }
        let path = &window.file.path;
        let mut header_bytes = [0u8; BATCH_HEADER_BYTES];
        window
            .file
            .file
            .read_exact_at(&mut header_bytes, position)
            .map_err(LogError::io("read segment", path))?;
        let header = BatchHeader::parse(&header_bytes).ok_or_else(|| {
            self.damaged(&window.file, position, "no valid batch header".to_owned())
        })?;
        let available = (window.end_position - position) as usize;
        let length = available.min(max_bytes.max(header.size_bytes));
        let mut buffer = BytesMut::zeroed(length);
        window
            .file
            .file
            .read_exact_at(&mut buffer, position)
            .map_err(LogError::io("read segment", path))?;
        let end = whole_batches_end(&buffer, length).max(header.size_bytes.min(length));
        let records = buffer.freeze().slice(..end);
        self.verify(&records, window, position)?;
        Ok(records)
    }

    /// The first batch whose max timestamp is at or after `timestamp`, for ListOffsets.
    /// The broker finds the exact record inside it (it may need decompressing). Batches at
    /// or past `upper_bound` (the high watermark) are not considered.
    pub fn batch_for_timestamp(
        &self,
        timestamp: i64,
        upper_bound: Offset,
    ) -> Result<Option<Bytes>, LogError> {
        let start = {
            let state = self.lock();
            state.check_online()?;
            let found = state
                .segments
                .values()
                .find(|s| s.max_timestamp >= timestamp && s.next_offset > state.log_start_offset);
            match found {
                Some(segment) => segment
                    .base_offset()
                    .plus(i64::from(segment.index.relative_offset_for_time(timestamp)))
                    .max(state.log_start_offset),
                None => return Ok(None),
            }
        };
        let mut offset = start;
        // Walk batch by batch; bounded by the log end.
        loop {
            let batch = match self.read(offset, 1, upper_bound) {
                Ok(batch) if batch.is_empty() => return Ok(None),
                Ok(batch) => batch,
                Err(LogError::OffsetOutOfRange { .. }) => return Ok(None),
                Err(error) => return Err(error),
            };
            let header = BatchHeader::parse(&batch).expect("read returns whole batches");
            if header.max_timestamp >= timestamp {
                return Ok(Some(batch.slice(..header.size_bytes)));
            }
            offset = header.next_offset();
        }
    }

    /// The batch holding the largest timestamp in the log (the earliest such batch), if it
    /// lies below `upper_bound`.
    pub fn batch_with_max_timestamp(&self, upper_bound: Offset) -> Result<Option<Bytes>, LogError> {
        let offset = {
            let state = self.lock();
            state.check_online()?;
            let mut best: Option<(i64, Offset)> = None;
            for segment in state.segments.values() {
                if segment.max_timestamp >= 0
                    && segment.next_offset > state.log_start_offset
                    && best.is_none_or(|(timestamp, _)| segment.max_timestamp > timestamp)
                {
                    best = Some((segment.max_timestamp, segment.max_timestamp_batch));
                }
            }
            match best {
                Some((_, offset)) => offset.max(state.log_start_offset),
                None => return Ok(None),
            }
        };
        match self.read(offset, 1, upper_bound) {
            Ok(batch) if batch.is_empty() => Ok(None),
            Ok(batch) => {
                let header = BatchHeader::parse(&batch).expect("read returns whole batches");
                Ok(Some(batch.slice(..header.size_bytes)))
            }
            Err(LogError::OffsetOutOfRange { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Deletes whole sealed segments past `retention.ms` or beyond `retention.bytes`, moving
    /// the log start offset. Returns how many segments were deleted.
    ///
    /// Only segments wholly below `upper_bound` go: the caller passes the high watermark
    /// (storage states facts, replication decides what is committed). On a leader whose
    /// followers lag by more than a segment, a segment above it holds records that are not
    /// replicated yet; deleting them would move the log start past the high watermark, and
    /// a follower that then fetches below it would be reset past records it never received,
    /// which a new leader elected from it would not have.
    pub fn apply_retention(&self, now_ms: i64, upper_bound: Offset) -> Result<usize, LogError> {
        let config = self.config();
        if !config.cleanup_delete {
            return Ok(0);
        }
        let mut doomed = Vec::new();
        {
            let mut state = self.lock();
            state.check_online()?;
            let fully_visible = |s: &Segment| s.visible_bytes == s.size_bytes;
            // An expired, non-empty active segment is rolled so that it can go too.
            if config.retention_ms >= 0 {
                let all_expired = state
                    .segments
                    .values()
                    .all(|s| s.is_empty() || s.max_timestamp < now_ms - config.retention_ms);
                let below_bound = state.log_end_offset() <= upper_bound;
                let active = state.active();
                if all_expired && below_bound && !active.is_empty() && fully_visible(active) {
                    self.roll_locked(&mut state, now_ms)?;
                    sync_directory(&self.dir).map_err(LogError::io("sync directory", &self.dir))?;
                }
            }
            let mut total_bytes: i64 = state.segments.values().map(|s| s.size_bytes as i64).sum();
            let sealed: Vec<Offset> = state.segments.keys().copied().collect();
            for (base, next_base) in sealed.iter().zip(&sealed[1..]) {
                let segment = &state.segments[base];
                if !fully_visible(segment) || *next_base > upper_bound {
                    break;
                }
                let expired = config.retention_ms >= 0
                    && segment.max_timestamp < now_ms - config.retention_ms;
                let oversized = config.retention_bytes >= 0
                    && total_bytes - segment.size_bytes as i64 >= config.retention_bytes;
                if !(expired || oversized) {
                    break;
                }
                total_bytes -= segment.size_bytes as i64;
                doomed.push(state.segments.remove(base).expect("listed above"));
            }
            if !doomed.is_empty() {
                let first = *state
                    .segments
                    .keys()
                    .next()
                    .expect("the active segment stays");
                assert!(
                    first <= upper_bound,
                    "retention moved the log start to {first}, past its bound {upper_bound}"
                );
                state.log_start_offset = state.log_start_offset.max(first);
                // The producer state itself stays (as Kafka's): producers are forgotten by
                // expiry, not because their batches aged out.
                snapshot::delete_where(&self.dir, |offset| offset < first)?;
                tracing::info!(
                    partition = %self.partition,
                    segments = doomed.len(),
                    log_start_offset = state.log_start_offset.0,
                    "retention deleted segments"
                );
            }
        }
        for segment in &doomed {
            segment.delete_files(&self.dir);
        }
        Ok(doomed.len())
    }

    /// Syncs unsynced data of a log that does not sync before acknowledging, once `flush.ms`
    /// has passed since the last sync.
    pub fn flush_if_due(&self, backend: &dyn IoBackend, now_ms: i64) -> Result<(), LogError> {
        let config = self.config();
        let file = {
            let mut state = self.lock();
            if state.offline.is_some()
                || state.messages_since_flush == 0
                || now_ms.saturating_sub(state.last_flush_ms) < config.flush_ms
            {
                return Ok(());
            }
            state.messages_since_flush = 0;
            state.last_flush_ms = now_ms;
            Arc::clone(&state.active().file)
        };
        crate::io::sync_file(backend, &file.file).map_err(|error| {
            let reason = format!("fdatasync of {} failed: {error}", file.path.display());
            self.take_offline(reason.clone());
            LogError::Offline(reason)
        })
    }

    /// Moves the log start offset to `offset` (DeleteRecords): records below it are no
    /// longer readable, and whole segments below it are deleted. `offset` may not pass the
    /// high watermark. Returns the new log start offset.
    pub fn delete_records_before(&self, offset: Offset) -> Result<Offset, LogError> {
        let mut doomed = Vec::new();
        let log_start_offset = {
            let mut state = self.lock();
            state.check_online()?;
            if offset > state.durable_end_offset || offset.0 < 0 {
                return Err(LogError::OffsetOutOfRange {
                    requested: offset,
                    log_start_offset: state.log_start_offset,
                    end_offset: state.durable_end_offset,
                });
            }
            state.log_start_offset = state.log_start_offset.max(offset);
            let start = state.log_start_offset;
            let bases: Vec<Offset> = state.segments.keys().copied().collect();
            for base in &bases[..bases.len() - 1] {
                if state.segments[base].next_offset > start {
                    break;
                }
                doomed.push(state.segments.remove(base).expect("listed above"));
            }
            if !doomed.is_empty() {
                let first = *state
                    .segments
                    .keys()
                    .next()
                    .expect("the active segment stays");
                snapshot::delete_where(&self.dir, |offset| offset < first)?;
            }
            start
        };
        for segment in &doomed {
            segment.delete_files(&self.dir);
        }
        Ok(log_start_offset)
    }

    /// Removes every batch that holds an offset at or after `offset` (a batch straddling it
    /// goes whole, as in Kafka), so the log ends before `offset`. The caller makes sure no
    /// append to this log is in flight (a follower truncating, or recovery). A truncation
    /// below the log start lowers it: use `LogManager::truncate_to`, which checkpoints it.
    pub fn truncate_to(&self, offset: Offset) -> Result<(), LogError> {
        let config = self.config();
        let mut state = self.lock();
        state.check_online()?;
        self.truncate_locked(&mut state, &config, offset)
    }

    fn truncate_locked(
        &self,
        state: &mut LogState,
        config: &LogConfig,
        offset: Offset,
    ) -> Result<(), LogError> {
        if offset >= state.log_end_offset() {
            return Ok(());
        }
        let keep: Vec<Offset> = state
            .segments
            .keys()
            .copied()
            .filter(|base| *base < offset)
            .collect();
        let doomed: Vec<Offset> = state
            .segments
            .keys()
            .copied()
            .filter(|base| *base >= offset)
            .collect();
        for base in doomed {
            let segment = state.segments.remove(&base).expect("listed above");
            segment.delete_files(&self.dir);
        }
        match keep.last() {
            Some(base) => {
                let segment = &state.segments[base];
                let cut = self.position_of_batch_holding(segment, offset)?;
                let file = &segment.file;
                file.file
                    .set_len(cut)
                    .and_then(|()| file.file.sync_all())
                    .map_err(LogError::io("truncate segment", &file.path))?;
                let (rescanned, _) =
                    open_segment(&self.dir, *base, false, config.index_interval_bytes)?;
                state.segments.insert(*base, rescanned);
            }
            None => {
                let segment = Segment::create(&self.dir, offset, crate::manager::now_ms())?;
                state.segments.insert(offset, segment);
            }
        }
        sync_directory(&self.dir).map_err(LogError::io("sync directory", &self.dir))?;
        let end = state.log_end_offset();
        state.durable_end_offset = state.durable_end_offset.min(end);
        state.synced_end_offset = state.synced_end_offset.min(end);
        state
            .epochs
            .truncate_from(end)
            .map_err(LogError::io("write leader-epoch-checkpoint", &self.dir))?;
        state.log_start_offset = state.log_start_offset.min(end);
        state.producers = rebuild(&RebuildSource {
            partition: &self.partition,
            dir: &self.dir,
            segments: &state.segments,
            log_end_offset: end,
            now_ms: crate::manager::now_ms(),
            expiration_ms: config.producer_id_expiration_ms,
        })?;
        Ok(())
    }

    /// Empties the log and starts it over at `offset` (a follower whose leader no longer
    /// has the records after its end: they were deleted by retention or DeleteRecords). Use
    /// `LogManager::reset_to`, which checkpoints the new log start.
    pub fn reset_to(&self, offset: Offset) -> Result<(), LogError> {
        let mut state = self.lock();
        state.check_online()?;
        let doomed: Vec<Offset> = state.segments.keys().copied().collect();
        for base in doomed {
            let old = state.segments.remove(&base).expect("listed above");
            old.delete_files(&self.dir);
        }
        let segment = Segment::create(&self.dir, offset, crate::manager::now_ms())?;
        state.segments.insert(offset, segment);
        sync_directory(&self.dir).map_err(LogError::io("sync directory", &self.dir))?;
        state.log_start_offset = offset;
        state.durable_end_offset = offset;
        state.synced_end_offset = offset;
        state
            .epochs
            .truncate_from(Offset(i64::MIN))
            .map_err(LogError::io("write leader-epoch-checkpoint", &self.dir))?;
        Ok(())
    }

    /// Byte position of the batch holding `offset` in `segment` (its size if none does).
    fn position_of_batch_holding(
        &self,
        segment: &Segment,
        offset: Offset,
    ) -> Result<u64, LogError> {
        let relative = (offset.0 - segment.base_offset().0).max(0) as u32;
        let mut position = u64::from(segment.index.position_for(relative));
        let mut header_bytes = [0u8; BATCH_HEADER_BYTES];
        while position < segment.size_bytes {
            segment
                .file
                .file
                .read_exact_at(&mut header_bytes, position)
                .map_err(LogError::io("read segment", &segment.file.path))?;
            let header = BatchHeader::parse(&header_bytes).ok_or_else(|| LogError::Io {
                operation: "parse batch header",
                path: segment.file.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad batch header at byte {position}"),
                ),
            })?;
            if header.next_offset() > offset {
                return Ok(position);
            }
            position += header.size_bytes as u64;
        }
        Ok(segment.size_bytes)
    }

    /// The offset below which the log is synced and indexed: the active segment's base.
    pub fn recovery_point(&self) -> Offset {
        let state = self.lock();
        state.active().base_offset().min(state.synced_end_offset)
    }

    /// Syncs the active segment and writes its indexes; returns the log end offset, which is
    /// then a valid recovery point.
    pub fn close(&self, backend: &dyn IoBackend) -> Result<Offset, LogError> {
        let state = self.lock();
        state.check_online()?;
        let active = state.active();
        crate::io::sync_file(backend, &active.file.file)
            .map_err(LogError::io("sync segment", &active.file.path))?;
        active.write_indexes(&self.dir)?;
        // The next start loads this instead of scanning the active segment.
        snapshot::write(&self.dir, state.log_end_offset(), &state.producers)?;
        Ok(state.log_end_offset())
    }
}

// Producer state (see `producer_state`): read access for DescribeProducers, expiry, and
// the hook replication uses to keep a follower's state in step with the leader's batches.
impl Log {
    /// Every producer id with state in this log, in id order.
    pub fn producer_entries(&self) -> Vec<(ProducerId, ProducerEntry)> {
        self.lock().producers.entries()
    }

    /// How many producer ids have state in this log.
    pub fn producer_count(&self) -> usize {
        self.lock().producers.len()
    }

    /// Forgets producers idle for `producer.id.expiration.ms`; returns how many.
    pub fn remove_expired_producers(&self, now_ms: i64) -> usize {
        let expiration_ms = self.config().producer_id_expiration_ms;
        self.lock().producers.remove_expired(now_ms, expiration_ms)
    }

    /// Runs `update` on the producer state under the log's lock. For replication: every
    /// batch a follower makes part of its log (with the leader's offsets) must reach
    /// `ProducerStateManager::update_from_batch` in the same critical section, so its state
    /// is the leader's when it takes over. Appends through `Log::plan` already do that for
    /// every batch they write; only the client checks (`check_client_batches`) must be
    /// skipped for a follower's appends. This is for any other path.
    pub fn with_producer_state<T>(&self, update: impl FnOnce(&mut ProducerStateManager) -> T) -> T {
        update(&mut self.lock().producers)
    }
}

/// Bytes of whole batches at the start of `bytes`, stopping before `max_bytes` is exceeded.
fn whole_batches_end(bytes: &[u8], max_bytes: usize) -> usize {
    let mut end = 0;
    while let Some(header) = BatchHeader::parse(&bytes[end..]) {
        let next = end + header.size_bytes;
        if next > bytes.len() || (next > max_bytes && end > 0) {
            break;
        }
        end = next;
        if end >= max_bytes {
            break;
        }
    }
    end
}

/// A sealed segment as the cleaner sees it: its file and bookkeeping at the time of the
/// look. The cleaner reads the file without the log's lock (sealed segments never change)
/// and hands the file back to [`Log::replace_segments`], which checks it is still current.
pub(crate) struct SealedSegment {
    pub file: Arc<SegmentFile>,
    pub next_offset: Offset,
    pub size_bytes: u64,
    pub max_timestamp: i64,
}

/// What the cleaner may clean: the sealed, fully durable segments, oldest first.
pub(crate) struct CleanableSegments {
    pub log_start_offset: Offset,
    pub sealed: Vec<SealedSegment>,
}

// Compaction support: the cleaner (crate::cleaner) lists sealed segments, cleans them into
// new files outside the lock, and swaps the result in here.
impl Log {
    /// The sealed segments below the active one, as far as all their bytes are durable.
    pub(crate) fn cleanable_segments(&self) -> Result<CleanableSegments, LogError> {
        let state = self.lock();
        state.check_online()?;
        let active_base = state.active().base_offset();
        let sealed = state
            .segments
            .range(..active_base)
            .map(|(_, segment)| segment)
            .take_while(|segment| {
                segment.visible_bytes == segment.size_bytes
                    && segment.next_offset <= state.synced_end_offset
            })
            .map(|segment| SealedSegment {
                file: Arc::clone(&segment.file),
                next_offset: segment.next_offset,
                size_bytes: segment.size_bytes,
                max_timestamp: segment.max_timestamp,
            })
            .collect();
        Ok(CleanableSegments {
            log_start_offset: state.log_start_offset,
            sealed,
        })
    }

    /// Replaces the segments of `replaced` (consecutive, oldest first) by `cleaned`, whose
    /// files are already durable under their `.swap` names. Under the log's lock: checks
    /// that every replaced segment is still in the log with the same file (retention,
    /// DeleteRecords or truncation may have removed it meanwhile; then nothing changes and
    /// `Ok(false)` is returned), runs `commit_files` (the renames that make the swap
    /// permanent), then swaps the map entries. Readers holding the old files keep reading
    /// them. A failed `commit_files` takes the log offline: the next start completes the
    /// swap from the files on disk.
    pub(crate) fn replace_segments(
        &self,
        replaced: &[Arc<SegmentFile>],
        cleaned: Segment,
        commit_files: impl FnOnce() -> Result<(), LogError>,
    ) -> Result<bool, LogError> {
        assert!(!replaced.is_empty(), "a swap replaces at least one segment");
        assert_eq!(
            cleaned.base_offset(),
            replaced[0].base_offset,
            "a cleaned segment keeps the base offset of the first segment it replaces"
        );
        let mut state = self.lock();
        state.check_online()?;
        let active_base = state.active().base_offset();
        let current = replaced.iter().all(|file| {
            file.base_offset < active_base
                && state
                    .segments
                    .get(&file.base_offset)
                    .is_some_and(|segment| Arc::ptr_eq(&segment.file, file))
        });
        if !current {
            return Ok(false);
        }
        if let Err(error) = commit_files() {
            drop(state);
            self.take_offline(format!("swapping in a cleaned segment failed: {error}"));
            return Err(error);
        }
        for file in replaced {
            state.segments.remove(&file.base_offset);
        }
        state.segments.insert(cleaned.base_offset(), cleaned);
        Ok(true)
    }
}
