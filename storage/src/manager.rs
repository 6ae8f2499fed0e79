//! The log manager: every partition log in one log directory, their checkpoints, and the
//! storage threads that append to them.
//!
//! Directory layout (Kafka's): `<log.dir>/<topic>-<partition>/` per log,
//! `recovery-point-offset-checkpoint` and `log-start-offset-checkpoint` at the top, and
//! `.kafka_cleanshutdown` present only between a clean close and the next start.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::batch::ValidBatch;
use crate::checkpoint;
use crate::commit_budget::{CommitBudget, CommitPermit};
use crate::committer::{AppendRequest, Committer, Completion};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::io::{sync_directory, IoBackend};
use crate::log::{AppendOrigin, Log, RecoveryHint};
use crate::space::SpaceReserve;
use crate::types::{Offset, TopicPartition};

const RECOVERY_POINT_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";
const CLEAN_SHUTDOWN_MARKER: &str = ".kafka_cleanshutdown";
/// Suffix of a partition directory being deleted (renamed first, so a crash mid-delete
/// never leaves a half-deleted log that looks live).
const DELETE_SUFFIX: &str = "-delete";

pub struct LogManagerOptions {
    pub dir: PathBuf,
    pub storage_threads: usize,
    pub backend: Arc<dyn IoBackend>,
    /// `log.dir.min.free.bytes`: appends are refused while the volume has less free (0: off).
    pub min_free_bytes: u64,
    /// `log.commit.queue.max.bytes`: most bytes queued for the storage threads, all logs
    /// together (see [`crate::commit_budget`]).
    pub commit_queue_bytes_max: usize,
}

pub struct LogManager {
    dir: PathBuf,
    logs: RwLock<HashMap<TopicPartition, Arc<Log>>>,
    backend: Arc<dyn IoBackend>,
    committer: Mutex<Option<Committer>>,
    commit_budget: CommitBudget,
    /// Held while the checkpoints are snapshotted and written. Every writer goes through the
    /// same temporary files (`<name>.tmp`, then rename): two at once could interleave their
    /// writes and rename a mix, or rename an older snapshot over a newer one.
    checkpoint_lock: Mutex<()>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl LogManager {
    /// Opens every log under `options.dir`, recovering those the last run did not close.
    pub fn open(
        options: LogManagerOptions,
        default_config: &LogConfig,
    ) -> Result<LogManager, LogError> {
        let dir = options.dir;
        fs::create_dir_all(&dir).map_err(LogError::io("create log directory", &dir))?;
        let marker = dir.join(CLEAN_SHUTDOWN_MARKER);
        let clean_shutdown = marker.exists();
        let recovery_points = checkpoint::read(&dir.join(RECOVERY_POINT_CHECKPOINT)).map_err(
            LogError::io("read checkpoint", dir.join(RECOVERY_POINT_CHECKPOINT)),
        )?;
        let log_starts = checkpoint::read(&dir.join(LOG_START_CHECKPOINT)).map_err(
            LogError::io("read checkpoint", dir.join(LOG_START_CHECKPOINT)),
        )?;
        let mut logs = HashMap::new();
        let now = now_ms();
        for entry in fs::read_dir(&dir).map_err(LogError::io("list log directory", &dir))? {
            let entry = entry.map_err(LogError::io("list log directory", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.path().is_dir() {
                continue;
            }
            if name.ends_with(DELETE_SUFFIX) {
                fs::remove_dir_all(entry.path())
                    .map_err(LogError::io("remove deleted log", entry.path()))?;
                continue;
            }
            let Some(partition) = TopicPartition::from_dir_name(&name) else {
                continue;
            };
            let hint = RecoveryHint {
                recovery_point: recovery_points.get(&partition).copied(),
                log_start_offset: log_starts.get(&partition).copied(),
                clean_shutdown,
            };
            let log = Log::open(
                entry.path(),
                partition.clone(),
                default_config.clone(),
                hint,
                now,
            )?;
            logs.insert(partition, Arc::new(log));
        }
        if clean_shutdown {
            fs::remove_file(&marker)
                .map_err(LogError::io("remove clean-shutdown marker", &marker))?;
            sync_directory(&dir).map_err(LogError::io("sync directory", &dir))?;
        }
        tracing::info!(
            dir = %dir.display(),
            logs = logs.len(),
            clean_shutdown,
            backend = options.backend.name(),
            "log manager opened"
        );
        let committer = Committer::start(
            options.storage_threads,
            Arc::clone(&options.backend),
            Arc::new(SpaceReserve::new(&dir, options.min_free_bytes)),
        );
        Ok(LogManager {
            dir,
            logs: RwLock::new(logs),
            backend: options.backend,
            committer: Mutex::new(Some(committer)),
            commit_budget: CommitBudget::new(options.commit_queue_bytes_max),
            checkpoint_lock: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    pub fn get(&self, partition: &TopicPartition) -> Option<Arc<Log>> {
        self.logs
            .read()
            .expect("logs lock poisoned")
            .get(partition)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Log>> {
        self.logs
            .read()
            .expect("logs lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// The log of `partition`, created empty (and made durable) if it does not exist.
    pub fn get_or_create(
        &self,
        partition: &TopicPartition,
        config: LogConfig,
    ) -> Result<Arc<Log>, LogError> {
        if let Some(log) = self.get(partition) {
            log.set_config(config);
            return Ok(log);
        }
        let mut logs = self.logs.write().expect("logs lock poisoned");
        if let Some(log) = logs.get(partition) {
            return Ok(Arc::clone(log));
        }
        let log_dir = self.dir.join(partition.dir_name());
        let log = Arc::new(Log::open(
            log_dir,
            partition.clone(),
            config,
            RecoveryHint::default(),
            now_ms(),
        )?);
        sync_directory(&self.dir).map_err(LogError::io("sync directory", &self.dir))?;
        logs.insert(partition.clone(), Arc::clone(&log));
        Ok(log)
    }

    /// Removes a log and its files. Readers holding it see it offline.
    pub fn delete(&self, partition: &TopicPartition) -> Result<(), LogError> {
        let Some(log) = self
            .logs
            .write()
            .expect("logs lock poisoned")
            .remove(partition)
        else {
            return Ok(());
        };
        log.take_offline(format!("{partition} was deleted"));
        let doomed = self.dir.join(format!(
            "{}.{}{DELETE_SUFFIX}",
            partition.dir_name(),
            now_ms()
        ));
        fs::rename(log.dir(), &doomed).map_err(LogError::io("rename deleted log", log.dir()))?;
        sync_directory(&self.dir).map_err(LogError::io("sync directory", &self.dir))?;
        fs::remove_dir_all(&doomed).map_err(LogError::io("remove deleted log", &doomed))
    }

    /// The bound on bytes queued for commit; take a permit from it before [`Self::append`].
    pub fn commit_budget(&self) -> &CommitBudget {
        &self.commit_budget
    }

    /// Queues an append; `completion` runs on a storage thread once it is durable. `permit`
    /// (from [`Self::commit_budget`]) is released right after the completion has run, so
    /// the budget counts the bytes for as long as the storage threads hold them.
    pub fn append(
        &self,
        log: Arc<Log>,
        batches: Vec<ValidBatch>,
        origin: AppendOrigin,
        permit: CommitPermit,
        completion: Completion,
    ) {
        let completion: Completion = Box::new(move |outcome| {
            completion(outcome);
            drop(permit);
        });
        let committer = self.committer.lock().expect("committer lock poisoned");
        match committer.as_ref() {
            Some(committer) => committer.submit(AppendRequest {
                log,
                batches,
                origin,
                completion,
            }),
            None => completion(Err(LogError::Offline("storage is shut down".into()))),
        }
    }

    /// Truncates `log` (see [`Log::truncate_to`]); when that lowers its log start offset,
    /// the checkpoint is rewritten before returning, so a crash cannot bring back the older,
    /// higher log start and hide records appended after the truncation.
    pub fn truncate_to(&self, log: &Log, offset: Offset) -> Result<(), LogError> {
        let before = log.offsets().log_start_offset;
        log.truncate_to(offset)?;
        if log.offsets().log_start_offset < before {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Cuts a log that went offline for a damaged batch back to the damaged segment's base
    /// and brings it online (see [`Log::repair_corruption`]); checkpoints a lowered log
    /// start like [`LogManager::truncate_to`]. Returns the new log end offset.
    pub fn repair_corruption(&self, log: &Log) -> Result<Offset, LogError> {
        let before = log.offsets().log_start_offset;
        let end = log.repair_corruption()?;
        if log.offsets().log_start_offset < before {
            self.checkpoint()?;
        }
        Ok(end)
    }

    /// Starts `log` over, empty, at `offset` (see [`Log::reset_to`]) and checkpoints its
    /// new log start before returning.
    pub fn reset_to(&self, log: &Log, offset: Offset) -> Result<(), LogError> {
        log.reset_to(offset)?;
        self.checkpoint()
    }

    /// Applies retention to every log, each up to the bound `upper_bound` gives it (its high
    /// watermark; `None` skips the log); returns the number of segments deleted.
    pub fn apply_retention(
        &self,
        upper_bound: impl Fn(&TopicPartition) -> Option<Offset>,
    ) -> usize {
        let now = now_ms();
        self.all()
            .iter()
            .filter_map(|log| Some((log, upper_bound(log.topic_partition())?)))
            .map(|(log, bound)| match log.apply_retention(now, bound) {
                Ok(deleted) => deleted,
                Err(error) => {
                    tracing::warn!(partition = %log.topic_partition(), %error, "retention failed");
                    0
                }
            })
            .sum()
    }

    /// Forgets, in every log, producer ids idle for `producer.id.expiration.ms`; returns
    /// how many.
    pub fn remove_expired_producers(&self) -> usize {
        let now = now_ms();
        self.all()
            .iter()
            .map(|log| log.remove_expired_producers(now))
            .sum()
    }

    /// Syncs logs in `flush.ms` mode whose interval has passed.
    pub fn flush_due(&self) {
        let now = now_ms();
        for log in self.all() {
            if let Err(error) = log.flush_if_due(self.backend.as_ref(), now) {
                tracing::error!(partition = %log.topic_partition(), %error, "periodic flush failed");
            }
        }
    }

    /// Writes the recovery-point and log-start checkpoints.
    pub fn checkpoint(&self) -> Result<(), LogError> {
        let logs = self.all();
        let recovery: HashMap<_, _> = logs
            .iter()
            .map(|log| (log.topic_partition().clone(), log.recovery_point()))
            .collect();
        self.write_checkpoints(&logs, recovery)
    }

    fn write_checkpoints(
        &self,
        logs: &[Arc<Log>],
        recovery: HashMap<TopicPartition, Offset>,
    ) -> Result<(), LogError> {
        let _writing = self
            .checkpoint_lock
            .lock()
            .expect("checkpoint lock poisoned");
        let starts: HashMap<_, _> = logs
            .iter()
            .map(|log| {
                (
                    log.topic_partition().clone(),
                    log.offsets().log_start_offset,
                )
            })
            .collect();
        let recovery_path = self.dir.join(RECOVERY_POINT_CHECKPOINT);
        checkpoint::write(&recovery_path, &recovery)
            .map_err(LogError::io("write checkpoint", &recovery_path))?;
        let start_path = self.dir.join(LOG_START_CHECKPOINT);
        checkpoint::write(&start_path, &starts)
            .map_err(LogError::io("write checkpoint", &start_path))
    }

    /// Finishes queued appends, closes every log and marks the directory cleanly shut down.
    pub fn shutdown(&self) -> Result<(), LogError> {
        if let Some(committer) = self
            .committer
            .lock()
            .expect("committer lock poisoned")
            .take()
        {
            committer.shutdown();
        }
        let logs = self.all();
        let mut recovery = HashMap::new();
        let mut all_closed = true;
        for log in &logs {
            match log.close(self.backend.as_ref()) {
                Ok(end) => {
                    recovery.insert(log.topic_partition().clone(), end);
                }
                Err(error) => {
                    all_closed = false;
                    tracing::error!(partition = %log.topic_partition(), %error, "log did not close cleanly");
                    recovery.insert(log.topic_partition().clone(), log.recovery_point());
                }
            }
        }
        self.write_checkpoints(&logs, recovery)?;
        if all_closed {
            let marker = self.dir.join(CLEAN_SHUTDOWN_MARKER);
            fs::write(&marker, b"")
                .map_err(LogError::io("write clean-shutdown marker", &marker))?;
            sync_directory(&self.dir).map_err(LogError::io("sync directory", &self.dir))?;
        }
        Ok(())
    }
}
