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
        thread::Builder::new().name(name).spawn(move || {
            let counts = run(queue);
            tracing::debug!(?counts, "raft log flusher stopped");
        })?;
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

/// Work done by one flusher, for tests and diagnostics.
#[derive(Debug, Default, PartialEq, Eq)]
struct FlushCounts {
    syncs: u64,
    requests: u64,
}

fn run(queue: mpsc::Receiver<FlushRequest>) -> FlushCounts {
    let mut counts = FlushCounts::default();
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
                counts.syncs += 1;
                if let Err(error) = file.sync_data() {
                    tracing::error!(%error, "raft log fdatasync failed; the log is no longer trusted");
                    failed = Some(error.to_string());
                    break;
                }
            }
        }
        counts.requests += batch.len() as u64;
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
    counts
}

#[cfg(test)]
mod tests {
    use openraft::type_config::TypeConfigExt;

    use super::*;

    #[tokio::test]
    async fn appends_queued_during_a_sync_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(dir.path().join("segment")).unwrap());
        let (requests, queue) = mpsc::channel();
        let mut completions = Vec::new();
        for _ in 0..50 {
            let (done, completed) = TypeConfig::oneshot();
            completions.push(completed);
            let callback = IOFlushed::signal(done);
            requests
                .send(FlushRequest {
                    file: Arc::clone(&file),
                    callback,
                })
                .unwrap();
        }
        drop(requests);

        // Fifty appends were queued while no sync ran: one fdatasync covers them all.
        let counts = run(queue);
        assert_eq!(
            counts,
            FlushCounts {
                syncs: 1,
                requests: 50
            }
        );
        for completed in completions {
            completed.await.unwrap().unwrap();
        }
    }
}
