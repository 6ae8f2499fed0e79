//! Model-based random test of a partition log: random sequences of appends, rolls,
//! reconfiguration, truncation, DeleteRecords, retention, checkpoints, clean and crashed
//! restarts and reads, each checked against a small in-memory model of what the log must
//! hold.
//!
//! The model is a list of segments, each a list of batches with their stored bytes, plus the
//! log start offset and the last checkpointed log start offset. It knows the rules that
//! decide segment boundaries (`segment.bytes`), what retention and DeleteRecords delete
//! (whole segments) and what a crash forgets (an uncheckpointed log start offset). After
//! every operation the log's offsets, segment count and size, and a random read must agree
//! with the model.
//!
//! Runs are reproducible from a seed: a failure prints the backend, the seed and the index
//! of the operation that failed. `KARST_MODEL_SEED=<n>` runs only that seed and
//! `KARST_MODEL_OPS=<n>` sets the operations per run, for long runs:
//!
//! ```text
//! KARST_MODEL_SEED=7 KARST_MODEL_OPS=200000 cargo test --release -p karst-storage --test model
//! ```

mod support;

use std::collections::VecDeque;
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use karst_storage::batch::BatchHeader;
use karst_storage::io::BackendChoice;
use karst_storage::{
    validate_produced, AppendInfo, AppendOrigin, IoBackend, LeaderEpoch, Log, LogConfig, LogError,
    LogManager, Offset, TopicPartition,
};

use support::{as_stored, batch_filled, open_with};

/// Seeds every CI run goes through, per backend.
const FIXED_SEEDS: [u64; 4] = [1, 0x5eed, 0xdead_beef, 20_240_601];
/// Operations per seed in CI: enough to pass through many rolls, truncations, retention
/// rounds and restarts while the whole file stays well under a minute in release.
const OPERATIONS_PER_RUN: usize = 5_000;
/// `Log::truncate_to` on its own lowers the log start offset (a truncation below it, or of
/// the batch that straddles it) without making the lower value durable: a crash restores the
/// older checkpointed value. Callers that can truncate below the log start use
/// `LogManager::truncate_to`, which checkpoints (see
/// `a_crash_after_truncating_below_the_log_start_keeps_later_appends_readable`). The model
/// drives `Log::truncate_to` directly, so it predicts the undurable lowering; the coverage
/// line counts how often a crash then raised the log start (`crash_restarts_that_hid_records`).
const TRUNCATION_FORGETS_LOWERED_LOG_START: bool = true;
/// Recent operations printed with a failure.
const TRACE_LENGTH: usize = 12;
/// Timestamps are real time at the start of a run minus an age of up to a few days; "now"
/// for retention is that start time, not a synthetic clock, so that segments retention
/// rolls are not mistaken for old ones by `segment.ms` (checked against real time).
const DAY_MS: i64 = 86_400_000;

/// splitmix64: a tiny, good-enough PRNG, so runs are reproducible without a crate.
struct Random(u64);

impl Random {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: i64, high: i64) -> i64 {
        assert!(low <= high, "empty range {low}..={high}");
        low + (self.next_u64() % (high - low + 1) as u64) as i64
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.between(0, choices.len() as i64 - 1) as usize]
    }

    /// True with probability `numerator / denominator`.
    fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.next_u64() % denominator < numerator
    }
}

#[derive(Clone, Debug)]
struct ModelBatch {
    base_offset: i64,
    records: i64,
    max_timestamp: i64,
    /// The batch as stored: produced bytes with base offset and leader epoch rewritten.
    bytes: Bytes,
}

impl ModelBatch {
    fn next_offset(&self) -> i64 {
        self.base_offset + self.records
    }
}

#[derive(Clone, Debug)]
struct ModelSegment {
    base_offset: i64,
    batches: Vec<ModelBatch>,
}

impl ModelSegment {
    fn size_bytes(&self) -> u64 {
        self.batches.iter().map(|b| b.bytes.len() as u64).sum()
    }

    fn next_offset(&self) -> i64 {
        self.batches
            .last()
            .map_or(self.base_offset, ModelBatch::next_offset)
    }

    fn max_timestamp(&self) -> i64 {
        self.batches
            .iter()
            .map(|b| b.max_timestamp)
            .max()
            .unwrap_or(-1)
    }
}

/// What the log must hold. Every append is synced before it is acknowledged, so a crash
/// loses no batch; it only forgets a log start offset that was never checkpointed.
#[derive(Clone)]
struct Model {
    segments: Vec<ModelSegment>,
    log_start_offset: i64,
    checkpointed_log_start_offset: Option<i64>,
    config: LogConfig,
}

impl Model {
    fn new(config: LogConfig) -> Model {
        Model {
            segments: vec![ModelSegment {
                base_offset: 0,
                batches: Vec::new(),
            }],
            log_start_offset: 0,
            checkpointed_log_start_offset: None,
            config,
        }
    }

    fn log_end_offset(&self) -> i64 {
        self.segments.last().expect("never empty").next_offset()
    }

    fn first_base_offset(&self) -> i64 {
        self.segments[0].base_offset
    }

    fn batches(&self) -> impl Iterator<Item = (usize, &ModelBatch)> {
        self.segments
            .iter()
            .enumerate()
            .flat_map(|(index, segment)| segment.batches.iter().map(move |b| (index, b)))
    }

    /// Appends one request's batches, rolling as `segment.bytes` demands.
    fn append(&mut self, produced: &[Bytes], epoch: LeaderEpoch) -> AppendInfo {
        let base_offset = self.log_end_offset();
        for bytes in produced {
            let header = BatchHeader::parse(bytes).expect("a built batch");
            let active = self.segments.last().expect("never empty");
            let too_big = active.size_bytes() + bytes.len() as u64 > self.config.segment_bytes;
            if !active.batches.is_empty() && too_big {
                self.segments.push(ModelSegment {
                    base_offset: self.log_end_offset(),
                    batches: Vec::new(),
                });
            }
            let offset = self.log_end_offset();
            let stored = as_stored(bytes, Offset(offset), epoch);
            self.segments
                .last_mut()
                .expect("never empty")
                .batches
                .push(ModelBatch {
                    base_offset: offset,
                    records: i64::from(header.records_count),
                    max_timestamp: header.max_timestamp,
                    bytes: Bytes::from(stored),
                });
        }
        AppendInfo {
            base_offset: Offset(base_offset),
            last_offset: Offset(self.log_end_offset() - 1),
            log_append_time_ms: -1,
            log_start_offset: Offset(self.log_start_offset),
        }
    }

    /// Drops every batch holding `offset` or later; a batch straddling it goes whole.
    fn truncate_to(&mut self, offset: i64) {
        if offset >= self.log_end_offset() {
            return;
        }
        self.segments.retain(|s| s.base_offset < offset);
        match self.segments.last_mut() {
            Some(last) => last.batches.retain(|b| b.next_offset() <= offset),
            None => self.segments.push(ModelSegment {
                base_offset: offset,
                batches: Vec::new(),
            }),
        }
        self.log_start_offset = self.log_start_offset.min(self.log_end_offset());
        if !TRUNCATION_FORGETS_LOWERED_LOG_START {
            // A lowered log start offset must survive a crash, or records appended after
            // the truncation vanish with it.
            self.checkpointed_log_start_offset = self
                .checkpointed_log_start_offset
                .map(|checkpointed| checkpointed.min(self.log_start_offset));
        }
    }

    /// DeleteRecords: `None` when `offset` is out of range.
    fn delete_records_before(&mut self, offset: i64) -> Option<i64> {
        if offset > self.log_end_offset() || offset < 0 {
            return None;
        }
        self.log_start_offset = self.log_start_offset.max(offset);
        while self.segments.len() > 1 && self.segments[0].next_offset() <= self.log_start_offset {
            self.segments.remove(0);
        }
        Some(self.log_start_offset)
    }

    /// Time and size retention over whole sealed segments; returns how many were deleted.
    fn apply_retention(&mut self, now_ms: i64) -> usize {
        let retention_ms = self.config.retention_ms;
        let retention_bytes = self.config.retention_bytes;
        let expired = |segment: &ModelSegment| {
            retention_ms >= 0 && segment.max_timestamp() < now_ms - retention_ms
        };
        let all_expired = self
            .segments
            .iter()
            .all(|s| s.batches.is_empty() || expired(s));
        let active = self.segments.last().expect("never empty");
        if retention_ms >= 0 && all_expired && !active.batches.is_empty() {
            let base_offset = self.log_end_offset();
            self.segments.push(ModelSegment {
                base_offset,
                batches: Vec::new(),
            });
        }
        let mut total_bytes: i64 = self.segments.iter().map(|s| s.size_bytes() as i64).sum();
        let mut deleted = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let oversized =
                retention_bytes >= 0 && total_bytes - oldest.size_bytes() as i64 >= retention_bytes;
            if !(expired(oldest) || oversized) {
                break;
            }
            total_bytes -= oldest.size_bytes() as i64;
            self.segments.remove(0);
            deleted += 1;
        }
        if deleted > 0 {
            self.log_start_offset = self.log_start_offset.max(self.first_base_offset());
        }
        deleted
    }

    /// A crash keeps every acknowledged batch; the log start offset falls back to the
    /// checkpointed one, within the segments that exist: a DeleteRecords not yet
    /// checkpointed may be forgotten (as in Kafka), but a crash must never raise the log
    /// start offset over acknowledged records.
    fn crash(&mut self) {
        let before = self.log_start_offset;
        let first = self.first_base_offset();
        self.log_start_offset = self
            .checkpointed_log_start_offset
            .unwrap_or(first)
            .max(first)
            .min(self.log_end_offset());
        if !TRUNCATION_FORGETS_LOWERED_LOG_START {
            assert!(
                self.log_start_offset <= before,
                "the model itself raised the log start"
            );
        }
    }

    /// (segment index, batch index in it) of the batch holding `offset` or the first after.
    fn position_of(&self, offset: i64) -> Option<(usize, usize)> {
        self.segments
            .iter()
            .enumerate()
            .find_map(|(index, segment)| {
                let batch = segment
                    .batches
                    .iter()
                    .position(|b| b.next_offset() > offset)?;
                Some((index, batch))
            })
    }

    /// The first batch at or after the log start whose max timestamp reaches `timestamp`.
    fn batch_for_timestamp(&self, timestamp: i64) -> Option<&ModelBatch> {
        self.batches()
            .map(|(_, b)| b)
            .find(|b| b.next_offset() > self.log_start_offset && b.max_timestamp >= timestamp)
    }
}

/// The shape of one produced batch.
#[derive(Clone, Copy, Debug)]
struct BatchShape {
    records: usize,
    value_bytes: usize,
    timestamp: i64,
    fill: u8,
}

impl BatchShape {
    fn build(&self) -> Bytes {
        batch_filled(self.records, self.value_bytes, self.timestamp, self.fill)
    }
}

#[derive(Clone, Debug)]
enum Operation {
    /// One produce request (one or more batches), awaited.
    Append {
        batches: Vec<BatchShape>,
        epoch: i32,
    },
    /// Several produce requests queued before any completes: one commit group.
    AppendBurst {
        requests: Vec<Vec<BatchShape>>,
        epoch: i32,
    },
    Reconfigure {
        segment_bytes: u64,
        index_interval_bytes: u64,
    },
    TruncateTo {
        offset: i64,
    },
    DeleteRecordsBefore {
        offset: i64,
    },
    ApplyRetention {
        retention_bytes: i64,
        retention_ms: i64,
    },
    Checkpoint,
    CleanRestart,
    CrashRestart,
    Read {
        offset: i64,
        max_bytes: usize,
    },
    ReadAll,
    FindTimestamp {
        timestamp: i64,
    },
}

/// Chooses operations from the model's current offsets.
struct Generator {
    random: Random,
    /// Real time at the start of the run; timestamps and retention's "now" derive from it.
    now_ms: i64,
    /// Whether producers currently send old timestamps (days old: retention food).
    old_timestamps: bool,
    next_fill: u8,
    /// Leader epochs only rise, as leaders follow each other (the log refuses an older one).
    epoch: i32,
}

impl Generator {
    fn new(seed: u64, now_ms: i64) -> Generator {
        Generator {
            random: Random(seed),
            now_ms,
            old_timestamps: false,
            next_fill: 0,
            epoch: 0,
        }
    }

    fn batch_shape(&mut self) -> BatchShape {
        if self.random.chance(1, 40) {
            self.old_timestamps = !self.old_timestamps;
        }
        let age_ms = if self.old_timestamps {
            self.random.between(2 * DAY_MS, 3 * DAY_MS)
        } else {
            self.random.between(0, 600_000)
        };
        self.next_fill = self.next_fill.wrapping_add(1);
        BatchShape {
            records: self.random.pick(&[1, 1, 2, 3, 5, 8, 20]),
            value_bytes: self.random.between(0, 120) as usize,
            timestamp: self.now_ms - age_ms,
            fill: self.next_fill,
        }
    }

    fn request(&mut self) -> Vec<BatchShape> {
        let batches = self.random.pick(&[1, 1, 1, 2, 4]);
        (0..batches).map(|_| self.batch_shape()).collect()
    }

    /// An offset in `[low, high]`, or now and then a few past either end.
    fn offset_around(&mut self, low: i64, high: i64) -> i64 {
        match self.random.between(0, 19) {
            0 => self.random.between((low - 3).max(0), low),
            1 => self.random.between(high, high + 3),
            _ => self.random.between(low, high),
        }
    }

    fn next(&mut self, model: &Model) -> Operation {
        let start = model.log_start_offset;
        let end = model.log_end_offset();
        if self.random.between(0, 9) == 0 {
            self.epoch += 1;
        }
        let epoch = self.epoch;
        match self.random.between(0, 99) {
            0..=39 => Operation::Append {
                batches: self.request(),
                epoch,
            },
            40..=45 => Operation::AppendBurst {
                requests: (0..self.random.between(2, 5))
                    .map(|_| self.request())
                    .collect(),
                epoch,
            },
            46..=49 => Operation::Reconfigure {
                segment_bytes: self.random.pick(&[300, 700, 1_500, 4_000, 16_000, 1 << 20]),
                index_interval_bytes: self.random.pick(&[64, 512, 1_024, 4_096]),
            },
            50..=53 => Operation::TruncateTo {
                offset: match self.random.between(0, 9) {
                    0 => self.random.between(0, end),
                    1 => self.random.between(model.first_base_offset(), start),
                    _ => self.random.between((end - 60).max(start), end),
                },
            },
            54..=57 => Operation::DeleteRecordsBefore {
                offset: self.offset_around(start, end),
            },
            58..=63 => Operation::ApplyRetention {
                retention_bytes: self.random.pick(&[-1, -1, 2_000, 8_000, 30_000]),
                retention_ms: self.random.pick(&[-1, 3_600_000, 7 * DAY_MS]),
            },
            64..=65 => Operation::Checkpoint,
            66..=68 => Operation::CleanRestart,
            69..=71 => Operation::CrashRestart,
            72..=89 => Operation::Read {
                offset: self.offset_around(start, end),
                max_bytes: self.random.pick(&[1, 100, 1_000, 5_000, 20_000, 100_000]),
            },
            90..=93 => Operation::ReadAll,
            _ => Operation::FindTimestamp {
                timestamp: self.now_ms - self.random.between(0, 3 * DAY_MS),
            },
        }
    }
}

/// The log under test, its manager, and how to reopen them.
struct Subject {
    dir: tempfile::TempDir,
    backend: Arc<dyn IoBackend>,
    partition: TopicPartition,
    manager: LogManager,
    log: Arc<Log>,
}

impl Subject {
    fn create(backend: Arc<dyn IoBackend>, config: &LogConfig) -> Subject {
        let dir = support::scratch_dir();
        let partition = TopicPartition::new("model", 0);
        let manager = open_with(dir.path(), Arc::clone(&backend), config);
        let log = manager.get_or_create(&partition, config.clone()).unwrap();
        Subject {
            dir,
            backend,
            partition,
            manager,
            log,
        }
    }

    /// Drops the manager (after a clean shutdown or not) and opens the directory again.
    fn restart(&mut self, clean: bool, config: &LogConfig) {
        if clean {
            self.manager.shutdown().unwrap();
        }
        let manager = open_with(self.dir.path(), Arc::clone(&self.backend), config);
        let log = manager
            .get(&self.partition)
            .expect("the log survives a restart");
        log.set_config(config.clone());
        // The old manager is dropped here without a shutdown when `clean` is false: its
        // storage threads have no work left, as every append was awaited.
        self.manager = manager;
        self.log = log;
    }

    /// Queues every request, then waits for each completion in order.
    fn append(&self, requests: &[Vec<BatchShape>], epoch: LeaderEpoch) -> Vec<AppendInfo> {
        let receivers: Vec<_> = requests
            .iter()
            .map(|request| {
                let bytes: Vec<u8> = request.iter().flat_map(|s| s.build()).collect();
                let batches = validate_produced(&Bytes::from(bytes), 1 << 24).unwrap();
                let (sender, receiver) = mpsc::channel();
                let queued_bytes: usize = batches.iter().map(|batch| batch.bytes.len()).sum();
                self.manager.append(
                    Arc::clone(&self.log),
                    batches,
                    AppendOrigin::Leader(epoch),
                    self.manager
                        .commit_budget()
                        .try_acquire(queued_bytes)
                        .expect("room in the commit budget"),
                    Box::new(move |outcome| sender.send(outcome).unwrap()),
                );
                receiver
            })
            .collect();
        receivers
            .into_iter()
            .map(|receiver| receiver.recv().unwrap().expect("append succeeds"))
            .collect()
    }
}

/// Prints where a run failed when it unwinds: backend, seed, operation index, recent trace.
struct FailureContext {
    backend: &'static str,
    seed: u64,
    operation_index: usize,
    trace: VecDeque<String>,
}

impl FailureContext {
    fn record(&mut self, index: usize, operation: &Operation) {
        self.operation_index = index;
        if self.trace.len() == TRACE_LENGTH {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("#{index}: {operation:?}"));
    }
}

impl Drop for FailureContext {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\nmodel run failed: backend {} seed {} at operation #{} \
                 (replay with KARST_MODEL_SEED={} KARST_MODEL_OPS={})\nlast operations:",
                self.backend,
                self.seed,
                self.operation_index,
                self.seed,
                self.operation_index + 1
            );
            for line in &self.trace {
                eprintln!("  {line}");
            }
        }
    }
}

fn initial_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4_000,
        index_interval_bytes: 512,
        retention_ms: -1,
        retention_bytes: -1,
        ..LogConfig::default()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs `operations` random operations from `seed` against a fresh log on `backend`.
fn run(backend: Arc<dyn IoBackend>, seed: u64, operations: usize) {
    let mut context = FailureContext {
        backend: backend.name(),
        seed,
        operation_index: 0,
        trace: VecDeque::new(),
    };
    let mut model = Model::new(initial_config());
    let mut subject = Subject::create(backend, &model.config);
    let mut generator = Generator::new(seed, now_ms());
    let mut coverage = Coverage::default();
    for index in 0..operations {
        let operation = generator.next(&model);
        context.record(index, &operation);
        let before = model.clone();
        apply(&operation, &mut model, &mut subject, generator.now_ms);
        coverage.note(&operation, &before, &model);
        check_offsets_and_layout(&model, &subject.log);
        let offset = generator.offset_around(model.log_start_offset, model.log_end_offset());
        let max_bytes = generator.random.pick(&[1, 700, 5_000, 64 * 1024]);
        check_read(&model, &subject.log, offset, max_bytes);
    }
    check_read_all(&model, &subject.log);
    subject.manager.shutdown().unwrap();
    println!("  covered: {coverage:?}");
}

/// How much of the interesting ground a run covered, printed after it so that a run that
/// quietly stopped exercising something shows.
#[derive(Debug, Default)]
struct Coverage {
    batches_appended: usize,
    segments_most: usize,
    segments_deleted_by_retention: usize,
    truncations_that_cut: usize,
    truncations_below_log_start: usize,
    delete_records_refused: usize,
    crash_restarts_that_forgot_delete_records: usize,
    crash_restarts_that_hid_records: usize,
    clean_restarts: usize,
    timestamps_found: usize,
}

impl Coverage {
    fn note(&mut self, operation: &Operation, before: &Model, after: &Model) {
        self.segments_most = self.segments_most.max(after.segments.len());
        let end_before = before.log_end_offset();
        match operation {
            Operation::Append { .. } | Operation::AppendBurst { .. } => {
                self.batches_appended += after.batches().count() - before.batches().count()
            }
            Operation::TruncateTo { offset } if *offset < end_before => {
                self.truncations_that_cut += 1;
                if *offset < before.log_start_offset {
                    self.truncations_below_log_start += 1;
                }
            }
            Operation::DeleteRecordsBefore { offset } if *offset > end_before => {
                self.delete_records_refused += 1
            }
            Operation::ApplyRetention { .. } => {
                self.segments_deleted_by_retention += before
                    .segments
                    .iter()
                    .filter(|old| {
                        after
                            .segments
                            .iter()
                            .all(|new| new.base_offset != old.base_offset)
                    })
                    .count()
            }
            Operation::CrashRestart if before.log_start_offset > after.log_start_offset => {
                self.crash_restarts_that_forgot_delete_records += 1
            }
            Operation::CrashRestart if before.log_start_offset < after.log_start_offset => {
                self.crash_restarts_that_hid_records += 1
            }
            Operation::CleanRestart => self.clean_restarts += 1,
            Operation::FindTimestamp { timestamp } => {
                self.timestamps_found +=
                    usize::from(after.batch_for_timestamp(*timestamp).is_some())
            }
            _ => {}
        }
    }
}

/// Applies `operation` to the log and the model, comparing what the log answers.
fn apply(operation: &Operation, model: &mut Model, subject: &mut Subject, now_ms: i64) {
    let log = Arc::clone(&subject.log);
    match operation {
        Operation::Append { batches, epoch } => {
            append_both(model, subject, std::slice::from_ref(batches), *epoch)
        }
        Operation::AppendBurst { requests, epoch } => append_both(model, subject, requests, *epoch),
        Operation::Reconfigure {
            segment_bytes,
            index_interval_bytes,
        } => {
            model.config.segment_bytes = *segment_bytes;
            model.config.index_interval_bytes = *index_interval_bytes;
            log.set_config(model.config.clone());
        }
        Operation::TruncateTo { offset } => {
            log.truncate_to(Offset(*offset)).unwrap();
            model.truncate_to(*offset);
        }
        Operation::DeleteRecordsBefore { offset } => {
            let answer = log.delete_records_before(Offset(*offset));
            match (model.delete_records_before(*offset), answer) {
                (Some(expected), Ok(actual)) => assert_eq!(actual, Offset(expected)),
                (None, Err(LogError::OffsetOutOfRange { .. })) => {}
                (expected, actual) => {
                    panic!("DeleteRecords: model says {expected:?}, log says {actual:?}")
                }
            }
        }
        Operation::ApplyRetention {
            retention_bytes,
            retention_ms,
        } => {
            model.config.retention_bytes = *retention_bytes;
            model.config.retention_ms = *retention_ms;
            log.set_config(model.config.clone());
            let deleted = log.apply_retention(now_ms, Offset::MAX).unwrap();
            assert_eq!(deleted, model.apply_retention(now_ms), "segments deleted");
        }
        Operation::Checkpoint => {
            subject.manager.checkpoint().unwrap();
            model.checkpointed_log_start_offset = Some(model.log_start_offset);
        }
        Operation::CleanRestart => {
            subject.restart(true, &model.config);
            model.checkpointed_log_start_offset = Some(model.log_start_offset);
        }
        Operation::CrashRestart => {
            subject.restart(false, &model.config);
            model.crash();
            check_offsets_and_layout(model, &subject.log);
            check_read_all(model, &subject.log);
        }
        Operation::Read { offset, max_bytes } => check_read(model, &log, *offset, *max_bytes),
        Operation::ReadAll => check_read_all(model, &log),
        Operation::FindTimestamp { timestamp } => {
            let found = log.batch_for_timestamp(*timestamp, Offset::MAX).unwrap();
            let expected = model.batch_for_timestamp(*timestamp).map(|b| &b.bytes);
            assert_eq!(found.as_ref(), expected, "batch for timestamp {timestamp}");
        }
    }
}

fn append_both(model: &mut Model, subject: &Subject, requests: &[Vec<BatchShape>], epoch: i32) {
    let infos = subject.append(requests, LeaderEpoch(epoch));
    for (request, info) in requests.iter().zip(infos) {
        let produced: Vec<Bytes> = request.iter().map(BatchShape::build).collect();
        assert_eq!(
            info,
            model.append(&produced, LeaderEpoch(epoch)),
            "append info"
        );
    }
}

fn check_offsets_and_layout(model: &Model, log: &Log) {
    let offsets = log.offsets();
    let end = Offset(model.log_end_offset());
    assert_eq!(
        offsets.log_start_offset,
        Offset(model.log_start_offset),
        "log start offset"
    );
    assert_eq!(offsets.log_end_offset, end, "log end offset");
    assert_eq!(offsets.durable_end_offset, end, "high watermark");
    assert_eq!(log.segment_count(), model.segments.len(), "segment count");
    let size: u64 = model.segments.iter().map(ModelSegment::size_bytes).sum();
    assert_eq!(log.size_bytes(), size, "log size in bytes");
}

/// A read returns whole batches, byte-identical to the model's, starting with the one
/// holding `offset`; at most `max_bytes` unless the first batch alone is larger; and it
/// stops early only at the end of a segment.
fn check_read(model: &Model, log: &Log, offset: i64, max_bytes: usize) {
    let answer = log.read(Offset(offset), max_bytes, Offset::MAX);
    if offset < model.log_start_offset || offset > model.log_end_offset() {
        assert!(
            matches!(answer, Err(LogError::OffsetOutOfRange { .. })),
            "read at {offset} outside the log: {answer:?}"
        );
        return;
    }
    let bytes = answer.unwrap_or_else(|error| panic!("read at {offset}: {error}"));
    let Some((segment, first)) = model.position_of(offset) else {
        assert!(bytes.is_empty(), "read at the log end returned bytes");
        return;
    };
    let expected = &model.segments[segment].batches[first..];
    let mut position = 0;
    let mut returned = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..])
            .unwrap_or_else(|| panic!("read at {offset}: no batch at byte {position}"));
        let batch = &bytes[position..position + header.size_bytes];
        let want = expected
            .get(returned)
            .unwrap_or_else(|| panic!("read at {offset} ran past segment {segment}"));
        assert!(
            batch == &want.bytes[..],
            "read at {offset}: batch {} differs from what was appended",
            want.base_offset
        );
        position += header.size_bytes;
        returned += 1;
    }
    assert!(returned >= 1, "read at {offset} returned nothing");
    assert!(
        returned == 1 || position <= max_bytes,
        "read at {offset} returned {position} bytes for max {max_bytes}"
    );
    if let Some(next) = expected.get(returned) {
        assert!(
            position + next.bytes.len() > max_bytes,
            "read at {offset} stopped after {position} bytes though batch {} fits in {max_bytes}",
            next.base_offset
        );
    }
}

/// Reading from the log start to the end gives exactly the model's batches.
fn check_read_all(model: &Model, log: &Log) {
    let read = support::read_all_bytes(log, Offset(model.log_start_offset));
    let expected: Vec<&Bytes> = model
        .batches()
        .map(|(_, b)| b)
        .filter(|b| b.next_offset() > model.log_start_offset)
        .map(|b| &b.bytes)
        .collect();
    assert_eq!(read.len(), expected.len(), "batches from the log start");
    for (index, (got, want)) in read.iter().zip(expected).enumerate() {
        assert!(got == want, "batch #{index} from the log start differs");
    }
}

/// Seeds and operation counts, from the environment when set.
fn seeds_and_operations() -> (Vec<u64>, usize) {
    let seeds = match std::env::var("KARST_MODEL_SEED") {
        Ok(text) => vec![text.parse().expect("KARST_MODEL_SEED is a number")],
        Err(_) => FIXED_SEEDS.to_vec(),
    };
    let operations = match std::env::var("KARST_MODEL_OPS") {
        Ok(text) => text.parse().expect("KARST_MODEL_OPS is a number"),
        Err(_) => OPERATIONS_PER_RUN,
    };
    (seeds, operations)
}

fn run_on(choice: BackendChoice) {
    let Some(backend) = support::backend_or_skip(choice) else {
        return;
    };
    let (seeds, operations) = seeds_and_operations();
    for seed in seeds {
        println!(
            "model run: backend {} seed {seed} operations {operations}",
            backend.name()
        );
        run(Arc::clone(&backend), seed, operations);
    }
}

#[test]
fn the_log_on_the_portable_backend_behaves_like_the_model() {
    run_on(BackendChoice::Portable);
}

#[test]
fn the_log_on_the_io_uring_backend_behaves_like_the_model() {
    run_on(BackendChoice::IoUring);
}

#[test]
fn a_crash_after_truncating_below_the_log_start_keeps_later_appends_readable() {
    let dir = tempfile::tempdir().unwrap();
    let partition = TopicPartition::new("lowered", 0);
    let backend: Arc<dyn IoBackend> = Arc::new(karst_storage::PortableBackend);
    let config = LogConfig::default();
    {
        let manager = open_with(dir.path(), Arc::clone(&backend), &config);
        let log = manager.get_or_create(&partition, config.clone()).unwrap();
        // Offsets 0..20 in four batches; DeleteRecords moves the log start to 12, and a
        // checkpoint makes that durable.
        for round in 0..4 {
            support::append(&manager, &log, support::batch(5, 10, round)).unwrap();
        }
        log.delete_records_before(Offset(12)).unwrap();
        manager.checkpoint().unwrap();
        // A follower-style truncation to 5 lowers the log start offset to 5 with it.
        manager.truncate_to(&log, Offset(5)).unwrap();
        assert_eq!(log.offsets().log_start_offset, Offset(5));
        // Records 5..20 are appended again and acknowledged, so durable.
        for round in 0..3 {
            support::append(&manager, &log, support::batch(5, 10, 10 + round)).unwrap();
        }
        assert_eq!(support::read_all(&log, Offset(5)).len(), 3);
        // Crash: the manager goes away without a shutdown.
    }
    let manager = open_with(dir.path(), backend, &config);
    let log = manager.get(&partition).unwrap();
    assert_eq!(
        log.offsets().log_start_offset,
        Offset(5),
        "the crash raised the log start offset over acknowledged records"
    );
    assert_eq!(support::read_all(&log, Offset(5)).len(), 3);
}
