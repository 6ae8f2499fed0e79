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
use std::hash::{Hash, Hasher};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::batch::ValidBatch;
use crate::error::LogError;
use crate::io::IoBackend;
use crate::log::{AppendInfo, Log, WriteReceipt};
use crate::segment::SegmentFile;
use crate::types::LeaderEpoch;

/// Most bytes one group takes before it is written and synced; bounds the latency that a
/// large backlog adds to the first request of a group.
pub const GROUP_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Called once with the outcome of an append, on the storage thread: keep it short.
pub type Completion = Box<dyn FnOnce(Result<AppendInfo, LogError>) + Send>;

pub struct AppendRequest {
    pub log: Arc<Log>,
    pub batches: Vec<ValidBatch>,
    pub leader_epoch: LeaderEpoch,
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
    pub fn start(thread_count: usize, backend: Arc<dyn IoBackend>) -> Committer {
        assert!(thread_count > 0, "at least one storage thread");
        let mut senders = Vec::with_capacity(thread_count);
        let mut threads = Vec::with_capacity(thread_count);
        for index in 0..thread_count {
            let (sender, receiver) = mpsc::channel();
            let backend = Arc::clone(&backend);
            let thread = std::thread::Builder::new()
                .name(format!("karst-storage-{index}"))
                .spawn(move || run_thread(&receiver, backend.as_ref()))
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

fn run_thread(receiver: &mpsc::Receiver<AppendRequest>, backend: &dyn IoBackend) {
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
        commit_group(group, backend);
    }
}

fn commit_group(group: Vec<AppendRequest>, backend: &dyn IoBackend) {
    let now = now_ms();
    let mut written: Vec<(Arc<Log>, Result<WriteReceipt, LogError>, Completion)> = group
        .into_iter()
        .map(|request| {
            let outcome = request
                .log
                .write(backend, request.batches, request.leader_epoch, now);
            (request.log, outcome, request.completion)
        })
        .collect();
    // One sync per log per group, covering every file the group wrote to for it.
    let mut logs: Vec<Arc<Log>> = Vec::new();
    for (log, _, _) in &written {
        if !logs.iter().any(|seen| Arc::ptr_eq(seen, log)) {
            logs.push(Arc::clone(log));
        }
    }
    for log in logs {
        let receipts: Vec<&WriteReceipt> = written
            .iter()
            .filter(|(other, _, _)| Arc::ptr_eq(other, &log))
            .filter_map(|(_, outcome, _)| outcome.as_ref().ok())
            .collect();
        if !receipts.iter().any(|receipt| receipt.needs_sync) {
            continue;
        }
        let mut files: Vec<Arc<SegmentFile>> = Vec::new();
        for (file, _) in receipts.iter().flat_map(|receipt| receipt.written.iter()) {
            if !files.iter().any(|seen| Arc::ptr_eq(seen, file)) {
                files.push(Arc::clone(file));
            }
        }
        let created_segment = receipts.iter().any(|receipt| receipt.created_segment);
        if let Err(error) = log.sync(backend, &files, created_segment) {
            // None of this log's appends in the group is durable: fail them all.
            for entry in written
                .iter_mut()
                .filter(|(other, _, _)| Arc::ptr_eq(other, &log))
            {
                entry.1 = Err(LogError::Offline(error.to_string()));
            }
        }
    }
    for (log, outcome, completion) in written {
        match outcome {
            Ok(receipt) => {
                log.publish(&receipt);
                completion(Ok(receipt.info));
            }
            Err(error) => completion(Err(error)),
        }
    }
}
