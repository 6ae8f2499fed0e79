//! The commit queue is bounded (`log.commit.queue.max.bytes`): a producer that never waits
//! for its appends (acks=0, or one whose requests time out) is held back by the budget, so
//! the bytes queued for the storage threads stay under the bound however hard it floods, and
//! a producer that waits for each append (acks=all) keeps getting its turn.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use karst_storage::io::{FileJob, JobError};
use karst_storage::{
    validate_produced, AppendOrigin, IoBackend, LeaderEpoch, LogConfig, LogManager,
    LogManagerOptions, PortableBackend, TopicPartition,
};

use support::{batch, scratch_dir};

/// The budget under test: small, so a flood of a few dozen MiB exceeds it many times over.
const COMMIT_QUEUE_BYTES_MAX: usize = 1024 * 1024;
/// Batches the flooding producer sends without waiting for any of them.
const FLOOD_BATCHES: usize = 400;
/// Appends the acks=all producer makes, each awaited before the next.
const ACKS_ALL_APPENDS: usize = 20;
/// What a group's I/O costs here: a slow disk, so the queue fills whenever it can.
const SYNC_DELAY: Duration = Duration::from_millis(20);

/// The portable backend, slowed down by [`SYNC_DELAY`] per group.
struct SlowDisk;

impl IoBackend for SlowDisk {
    fn name(&self) -> &'static str {
        "slow-portable"
    }

    fn run(&self, jobs: &[FileJob<'_>]) -> Vec<Result<(), JobError>> {
        std::thread::sleep(SYNC_DELAY);
        PortableBackend.run(jobs)
    }
}

/// Bytes handed to the storage threads and not yet completed, counted independently of
/// the budget (incremented before `append`, decremented in the completion), and the most
/// ever seen.
#[derive(Default)]
struct QueuedBytes {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl QueuedBytes {
    fn add(&self, bytes: usize) {
        let now = self.now.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn remove(&self, bytes: usize) {
        self.now.fetch_sub(bytes, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_acks_0_flood_is_held_to_the_commit_budget_while_acks_all_appends_progress() {
    let dir = scratch_dir();
    let manager = Arc::new(
        LogManager::open(
            LogManagerOptions {
                dir: dir.path().to_path_buf(),
                storage_threads: 1,
                backend: Arc::new(SlowDisk),
                min_free_bytes: 0,
                commit_queue_bytes_max: COMMIT_QUEUE_BYTES_MAX,
            },
            &LogConfig::default(),
        )
        .unwrap(),
    );
    let flooded = manager
        .get_or_create(&TopicPartition::new("flood", 0), LogConfig::default())
        .unwrap();
    let waited = manager
        .get_or_create(&TopicPartition::new("acks-all", 0), LogConfig::default())
        .unwrap();
    let produced = batch(16, 4096, 1_000);
    let queued = Arc::new(QueuedBytes::default());

    // 1. The acks=0 producer: take room, queue, never wait for the outcome.
    let flood = {
        let (manager, queued, produced) =
            (Arc::clone(&manager), Arc::clone(&queued), produced.clone());
        tokio::spawn(async move {
            for _ in 0..FLOOD_BATCHES {
                let permit = manager.commit_budget().acquire(produced.len()).await;
                let batches = validate_produced(&produced, 1 << 24).unwrap();
                queued.add(produced.len());
                let (queued, bytes) = (Arc::clone(&queued), produced.len());
                manager.append(
                    Arc::clone(&flooded),
                    batches,
                    AppendOrigin::Leader(LeaderEpoch(0)),
                    permit,
                    Box::new(move |outcome| {
                        outcome.expect("flood append");
                        queued.remove(bytes);
                    }),
                );
            }
            Instant::now()
        })
    };

    // 2. The acks=all producer, at the same time: every append awaited before the next.
    let mut acks_all_latencies = Vec::with_capacity(ACKS_ALL_APPENDS);
    for _ in 0..ACKS_ALL_APPENDS {
        let started = Instant::now();
        let permit = manager.commit_budget().acquire(produced.len()).await;
        let batches = validate_produced(&produced, 1 << 24).unwrap();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        queued.add(produced.len());
        let (counter, bytes) = (Arc::clone(&queued), produced.len());
        manager.append(
            Arc::clone(&waited),
            batches,
            AppendOrigin::Leader(LeaderEpoch(0)),
            permit,
            Box::new(move |outcome| {
                counter.remove(bytes);
                let _ = sender.send(outcome);
            }),
        );
        tokio::time::timeout(Duration::from_secs(10), receiver)
            .await
            .expect("an acks=all append completes while the flood goes on")
            .unwrap()
            .expect("acks=all append");
        acks_all_latencies.push(started.elapsed());
    }
    let acks_all_done = Instant::now();
    let flood_done = tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .expect("the flood finishes")
        .unwrap();

    // 3. The bound held: never more than the budget in the queue, though the flood alone
    //    was many budgets' worth.
    let most = queued.most.load(Ordering::SeqCst);
    let flooded_bytes = FLOOD_BATCHES * produced.len();
    eprintln!(
        "flooded {flooded_bytes} bytes; most queued {most} bytes (bound {COMMIT_QUEUE_BYTES_MAX}); \
         acks=all latency max {:?}; acks=all done {:?} before the flood",
        acks_all_latencies.iter().max().unwrap(),
        flood_done.saturating_duration_since(acks_all_done),
    );
    assert!(flooded_bytes > 20 * COMMIT_QUEUE_BYTES_MAX);
    assert!(
        most <= COMMIT_QUEUE_BYTES_MAX,
        "{most} bytes queued at once, bound {COMMIT_QUEUE_BYTES_MAX}"
    );
    // 4. acks=all traffic progressed during the flood, not after it: the budget is fair.
    assert!(
        acks_all_done < flood_done,
        "the acks=all producer finished only after the flood"
    );
    assert_eq!(
        waited.offsets().log_end_offset.0,
        (ACKS_ALL_APPENDS * 16) as i64
    );
    // 5. Every permit is returned once the queue drains (shutdown finishes it).
    manager.shutdown().unwrap();
    assert_eq!(manager.commit_budget().queued_bytes(), 0);
    assert_eq!(queued.now.load(Ordering::SeqCst), 0);
}
