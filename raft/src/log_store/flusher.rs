//! Group commit for log appends: one thread fdatasyncs on behalf of every append queued
//! while the previous sync ran, then tells openraft they are durable.
//!
//! `RaftLogStorage::append` writes entries to the page cache and returns at once (openraft
//! may read them back immediately); the entries count as persisted only when their
//! `IOFlushed` callback fires, which happens here, after `fdatasync` returned. A queue that
//! built up during one sync is flushed by the next single sync — that is the group commit.
//!
//! A failed fdatasync leaves the page cache in an unknown state (Linux may have dropped the
//! dirty pages and cleared the error), so after one failure every later flush fails too and
//! openraft stops this node: a disk that can no longer be trusted is a fail-stop.

use std::fs::File;
use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use openraft::storage::IOFlushed;

use crate::type_config::TypeConfig;

pub struct FlushRequest {
    pub file: Arc<File>,
    pub callback: IOFlushed<TypeConfig>,
}

/// Handle to the flusher thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Flusher {
    requests: mpsc::Sender<FlushRequest>,
}

impl Flusher {
    pub fn start(name: String) -> io::Result<Flusher> {
        let (requests, queue) = mpsc::channel();
        thread::Builder::new()
            .name(name)
            .spawn(move || run(queue))?;
        Ok(Flusher { requests })
    }

    pub fn submit(&self, request: FlushRequest) {
        if let Err(mpsc::SendError(request)) = self.requests.send(request) {
            request
                .callback
                .io_completed(Err(io::Error::other("raft log flusher has stopped")));
        }
    }
}

fn run(queue: mpsc::Receiver<FlushRequest>) {
    let mut failed: Option<String> = None;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());

        // Appends only ever go to the newest segment (older ones were synced when the log
        // rolled), so a batch names one or two distinct files.
        let mut files: Vec<&Arc<File>> = Vec::new();
        for request in &batch {
            if !files.iter().any(|file| Arc::ptr_eq(file, &request.file)) {
                files.push(&request.file);
            }
        }
        if failed.is_none() {
            for file in files {
                if let Err(error) = file.sync_data() {
                    tracing::error!(%error, "raft log fdatasync failed; the log is no longer trusted");
                    failed = Some(error.to_string());
                    break;
                }
            }
        }
        for request in batch {
            let result = match &failed {
                None => Ok(()),
                Some(error) => Err(io::Error::other(format!(
                    "raft log fdatasync failed earlier: {error}"
                ))),
            };
            request.callback.io_completed(result);
        }
    }
}
