//! Group commit: dedicated storage threads that append, sync once per group, then
//! acknowledge.
//!
//! Each thread owns a shard of the logs (by partition hash), so appends to one log are
//! written in submission order by one thread. A thread takes every request queued since its
//! last round (up to [`GROUP_BYTES_MAX`]), writes them, issues one `fdatasync` per file
//! touched, publishes the new high watermarks, and only then runs the completions. While it
//! syncs, new requests queue up and form the next group: under load one sync covers many
//! produce requests, which is what makes fsync-before-ack affordable.

use std::collections::hash_map::DefaultHasher;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::batch::ValidBatch;
use crate::error::LogError;
use crate::io::{FileJob, IoBackend};
use crate::log::{AppendInfo, AppendOrigin, Log, RollbackPoint, WritePlan};
use crate::segment::SegmentFile;
use crate::space::SpaceReserve;

/// Most bytes one group takes before it is written and synced; bounds the latency that a
/// large backlog adds to the first request of a group.
pub const GROUP_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Called once with the outcome of an append, on the storage thread: keep it short.
pub type Completion = Box<dyn FnOnce(Result<AppendInfo, LogError>) + Send>;

pub struct AppendRequest {
    pub log: Arc<Log>,
    pub batches: Vec<ValidBatch>,
    pub origin: AppendOrigin,
    pub completion: Completion,
}

pub struct Committer {
    senders: Vec<mpsc::Sender<AppendRequest>>,
    threads: Vec<JoinHandle<()>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Committer {
    pub fn start(
        thread_count: usize,
        backend: Arc<dyn IoBackend>,
        reserve: Arc<SpaceReserve>,
    ) -> Committer {
        assert!(thread_count > 0, "at least one storage thread");
        let mut senders = Vec::with_capacity(thread_count);
        let mut threads = Vec::with_capacity(thread_count);
        for index in 0..thread_count {
            let (sender, receiver) = mpsc::channel();
            let backend = Arc::clone(&backend);
            let reserve = Arc::clone(&reserve);
            let thread = std::thread::Builder::new()
                .name(format!("karst-storage-{index}"))
                .spawn(move || run_thread(&receiver, backend.as_ref(), &reserve))
                .expect("spawning a storage thread");
            senders.push(sender);
            threads.push(thread);
        }
        Committer { senders, threads }
    }

    /// Queues an append; its completion runs once it is durable (or failed).
    pub fn submit(&self, request: AppendRequest) {
        let mut hasher = DefaultHasher::new();
        request.log.topic_partition().hash(&mut hasher);
        let shard = (hasher.finish() % self.senders.len() as u64) as usize;
        if let Err(mpsc::SendError(request)) = self.senders[shard].send(request) {
            (request.completion)(Err(LogError::Offline("storage is shutting down".into())));
        }
    }

    /// Finishes queued appends and stops the threads.
    pub fn shutdown(self) {
        drop(self.senders);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn run_thread(
    receiver: &mpsc::Receiver<AppendRequest>,
    backend: &dyn IoBackend,
    reserve: &SpaceReserve,
) {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        let mut group_bytes: usize = group[0].batches.iter().map(|b| b.bytes.len()).sum();
        while group_bytes < GROUP_BYTES_MAX {
            match receiver.try_recv() {
                Ok(request) => {
                    group_bytes += request.batches.iter().map(|b| b.bytes.len()).sum::<usize>();
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        match reserve.admit(group_bytes as u64) {
            Ok(()) => commit_group(group, backend),
            Err(reason) => refuse_group(group, &reason),
        }
    }
}

/// Fails every append of a group that the free-space reserve turned away; nothing was
/// planned or written, so there is nothing to roll back.
fn refuse_group(group: Vec<AppendRequest>, reason: &str) {
    if let Some(suppressed) = OUT_OF_SPACE_WARNINGS.admit() {
        tracing::warn!(
            reason,
            appends = group.len(),
            not_logged_since_last_warning = suppressed,
            "append refused: free-space reserve reached"
        );
    }
    for request in group {
        (request.completion)(Err(LogError::OutOfSpace(reason.to_owned())));
    }
}

/// The I/O of one file in a group: contiguous pieces of one log's plans.
struct JobSpec {
    log_index: usize,
    target: Target,
    position: u64,
    buffers: Vec<Bytes>,
    sync: bool,
}

enum Target {
    Segment(Arc<SegmentFile>),
    /// Index into the group's opened directory handles (a new segment's directory entry).
    Directory(usize),
}

fn commit_group(group: Vec<AppendRequest>, backend: &dyn IoBackend) {
    let now = now_ms();
    // 1. Reserve: plan every request in order, remembering each log's state before its
    //    first plan in this group.
    let mut logs: Vec<(Arc<Log>, RollbackPoint)> = Vec::new();
    let mut planned: Vec<(usize, Result<WritePlan, LogError>, Completion)> =
        Vec::with_capacity(group.len());
    for request in group {
        let log_index = match logs
            .iter()
            .position(|(log, _)| Arc::ptr_eq(log, &request.log))
        {
            Some(index) => index,
            None => {
                logs.push((Arc::clone(&request.log), request.log.rollback_point()));
                logs.len() - 1
            }
        };
        let plan = request.log.plan(request.batches, request.origin, now);
        planned.push((log_index, plan, request.completion));
    }
    // A log whose planning failed part-way is rolled back whole and its group fails with
    // that error: the log was offline already, or a roll could not write the sealed
    // segment's indexes or create the next one (which leaves the log online, as a write
    // that ran out of space does).
    let mut failed: Vec<Option<LogError>> = (0..logs.len()).map(|_| None).collect();
    for (log_index, plan, _) in &planned {
        if let (Err(error), None) = (plan, &failed[*log_index]) {
            if error.is_request_refusal() {
                // Refused before reserving anything (producer state): only this request fails.
                continue;
            }
            let partition = logs[*log_index].0.topic_partition();
            tracing::warn!(
                %partition,
                %error,
                "append refused before writing; its group is rolled back"
            );
            failed[*log_index] = Some(error.duplicate());
        }
    }
    for (index, (log, point)) in logs.iter().enumerate() {
        if failed[index].is_some() {
            log.rollback(point);
        }
    }
    // 2. Jobs: per log, per segment file, one contiguous write (+ sync when any plan of the
    //    log needs it), and a directory sync when a segment was created.
    let mut specs: Vec<JobSpec> = Vec::new();
    let mut directories: Vec<File> = Vec::new();
    for (index, (log, _)) in logs.iter().enumerate() {
        if failed[index].is_some() {
            continue;
        }
        let plans: Vec<&WritePlan> = planned
            .iter()
            .filter(|(log_index, _, _)| *log_index == index)
            .filter_map(|(_, plan, _)| plan.as_ref().ok())
            .collect();
        let sync = plans.iter().any(|plan| plan.needs_sync);
        for plan in &plans {
            for (file, position, buffers) in &plan.pieces {
                let contiguous = specs.last_mut().filter(|spec| {
                    spec.log_index == index
                        && matches!(&spec.target, Target::Segment(f) if Arc::ptr_eq(f, file))
                        && spec.position + spec.buffers.iter().map(|b| b.len() as u64).sum::<u64>()
                            == *position
                });
                match contiguous {
                    Some(spec) => spec.buffers.extend(buffers.iter().cloned()),
                    None => specs.push(JobSpec {
                        log_index: index,
                        target: Target::Segment(Arc::clone(file)),
                        position: *position,
                        buffers: buffers.clone(),
                        sync,
                    }),
                }
            }
        }
        if sync && plans.iter().any(|plan| plan.created_segment) {
            match File::open(log.dir()) {
                Ok(directory) => {
                    directories.push(directory);
                    specs.push(JobSpec {
                        log_index: index,
                        target: Target::Directory(directories.len() - 1),
                        position: 0,
                        buffers: Vec::new(),
                        sync: true,
                    });
                }
                Err(error) => {
                    failed[index] = Some(LogError::Offline(format!(
                        "open {}: {error}",
                        log.dir().display()
                    )))
                }
            }
        }
    }
    // 3. Run the group's I/O.
    let jobs: Vec<FileJob<'_>> = specs
        .iter()
        .map(|spec| FileJob {
            file: match &spec.target {
                Target::Segment(file) => &file.file,
                Target::Directory(index) => &directories[*index],
            },
            position: spec.position,
            buffers: spec.buffers.iter().map(|b| b.as_ref()).collect(),
            sync: spec.sync,
        })
        .collect();
    let outcomes = backend.run(&jobs);
    // 4. Judge each log: out of space rolls back (the log stays online and writable once
    //    space returns); any other write error, and every sync error, takes it offline.
    for (spec, outcome) in specs.iter().zip(outcomes) {
        let Err(error) = outcome else { continue };
        if failed[spec.log_index].is_some() {
            continue;
        }
        let (log, point) = &logs[spec.log_index];
        let path = match &spec.target {
            Target::Segment(file) => file.path.display().to_string(),
            Target::Directory(_) => log.dir().display().to_string(),
        };
        let reason = format!("{error} on {path} at byte {}", spec.position);
        if error.is_out_of_space() {
            if let Some(suppressed) = OUT_OF_SPACE_WARNINGS.admit() {
                tracing::warn!(
                    partition = %log.topic_partition(),
                    reason,
                    not_logged_since_last_warning = suppressed,
                    "append refused: out of space"
                );
            }
            log.rollback(point);
            failed[spec.log_index] = Some(LogError::OutOfSpace(reason));
        } else {
            log.take_offline(reason.clone());
            failed[spec.log_index] = Some(LogError::Offline(reason));
        }
    }
    // 5. Publish and acknowledge in submission order.
    for (log_index, plan, completion) in planned {
        match (&failed[log_index], plan) {
            (None, Ok(plan)) => {
                logs[log_index].0.publish(&plan);
                completion(Ok(plan.info));
            }
            (Some(error), _) => completion(Err(error.duplicate())),
            (None, Err(error)) => completion(Err(error)),
        }
    }
}

/// How often a full disk is reported: it refuses every append until space returns, and a
/// warning per refused group would flood the log at the rate clients retry.
const OUT_OF_SPACE_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

static OUT_OF_SPACE_WARNINGS: RateLimit = RateLimit::new(OUT_OF_SPACE_WARNING_INTERVAL);

/// Lets one event through per interval and counts the ones it holds back.
struct RateLimit {
    interval: std::time::Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl RateLimit {
    const fn new(interval: std::time::Duration) -> RateLimit {
        RateLimit {
            interval,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last admitted event)` when this event may be logged.
    fn admit(&self) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (last, held_back) = &mut *state;
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            *held_back += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;
    use std::time::Duration;

    #[test]
    fn a_rate_limit_admits_one_event_per_interval_and_counts_the_rest() {
        let limit = RateLimit::new(Duration::from_millis(200));
        assert_eq!(limit.admit(), Some(0));
        assert_eq!(limit.admit(), None);
        assert_eq!(limit.admit(), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limit.admit(), Some(2));
        assert_eq!(limit.admit(), None);
    }
}
