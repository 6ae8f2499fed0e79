//! Storage append throughput with fsync before acknowledge, per I/O backend and group size,
//! next to the disk's own `dd oflag=dsync` at the same block size, in one run.
//!
//! Each append is one batch of the group size, awaited before the next (one write + one
//! fdatasync per append: the same work `dd oflag=dsync` does per block). A second series
//! runs 6 partitions concurrently, where group commit lets one submission carry several
//! partitions' write+sync chains. Run: `cargo bench -p karst-storage --bench append`.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use karst_storage::batch::write_varint;
use karst_storage::io::{select_backend, BackendChoice};
use karst_storage::{
    validate_produced, AppendOrigin, LeaderEpoch, LogConfig, LogManager, LogManagerOptions,
    TopicPartition,
};

const GROUP_SIZES: &[(usize, &str)] = &[
    (16 * 1024, "16 KiB"),
    (64 * 1024, "64 KiB"),
    (1024 * 1024, "1 MiB"),
];

/// Bytes written per measurement: enough syncs to average out, bounded in time.
fn total_bytes(group_bytes: usize) -> usize {
    (group_bytes * 1024).clamp(16 << 20, 256 << 20)
}

/// One uncompressed batch of about `size` bytes holding a single record.
fn batch_of_size(size: usize) -> Bytes {
    let value_bytes = size - 80;
    let mut record = vec![0u8];
    write_varint(&mut record, 0);
    write_varint(&mut record, 0);
    write_varint(&mut record, -1);
    write_varint(&mut record, value_bytes as i64);
    record.extend(std::iter::repeat_n(7u8, value_bytes));
    write_varint(&mut record, 0);
    let mut records = Vec::new();
    write_varint(&mut records, record.len() as i64);
    records.extend_from_slice(&record);
    let mut out = Vec::new();
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.push(2);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&1i64.to_be_bytes());
    out.extend_from_slice(&1i64.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    out.extend_from_slice(&records);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// MB/s of `dd if=/dev/zero bs=<block> oflag=dsync` in `dir`.
fn dd(dir: &Path, block_bytes: usize) -> f64 {
    let file = dir.join("dd.bench");
    let count = total_bytes(block_bytes) / block_bytes;
    let started = Instant::now();
    let status = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", file.display()),
            &format!("bs={block_bytes}"),
            &format!("count={count}"),
            "oflag=dsync",
            "status=none",
        ])
        .status()
        .expect("run dd");
    assert!(status.success());
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    (count * block_bytes) as f64 / elapsed / 1e6
}

/// MB/s of synced appends of `group_bytes` batches to `partitions` logs, each partition
/// appending one batch at a time and waiting for it.
fn appends(dir: &Path, choice: BackendChoice, group_bytes: usize, partitions: usize) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    let manager = Arc::new(
        LogManager::open(
            LogManagerOptions {
                dir: dir.to_path_buf(),
                storage_threads: 1,
                backend: select_backend(choice).expect("backend"),
                min_free_bytes: 0,
                commit_queue_bytes_max:
                    karst_storage::commit_budget::COMMIT_QUEUE_BYTES_MAX_DEFAULT,
            },
            &LogConfig::default(),
        )
        .unwrap(),
    );
    let batch = batch_of_size(group_bytes);
    let per_partition = total_bytes(group_bytes) / group_bytes / partitions;
    let started = Instant::now();
    let workers: Vec<_> = (0..partitions)
        .map(|index| {
            let manager = Arc::clone(&manager);
            let batch = batch.clone();
            std::thread::spawn(move || {
                let log = manager
                    .get_or_create(
                        &TopicPartition::new("bench", index as i32),
                        LogConfig::default(),
                    )
                    .unwrap();
                for _ in 0..per_partition {
                    let batches = validate_produced(&batch, usize::MAX).unwrap();
                    let (sender, receiver) = mpsc::channel();
                    let queued_bytes: usize = batches.iter().map(|batch| batch.bytes.len()).sum();
                    manager.append(
                        Arc::clone(&log),
                        batches,
                        AppendOrigin::Leader(LeaderEpoch(0)),
                        manager
                            .commit_budget()
                            .try_acquire(queued_bytes)
                            .expect("room in the commit budget"),
                        Box::new(move |outcome| sender.send(outcome).unwrap()),
                    );
                    receiver.recv().unwrap().expect("append");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    manager.shutdown().unwrap();
    (per_partition * partitions * batch.len()) as f64 / elapsed / 1e6
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("append-bench");
    std::fs::create_dir_all(&root).unwrap();
    println!("| group size | dd oflag=dsync MB/s | portable MB/s | io_uring MB/s | io_uring / dd | portable, 6 partitions MB/s | io_uring, 6 partitions MB/s |");
    println!("|---|---|---|---|---|---|---|");
    for (size, label) in GROUP_SIZES {
        let dd = dd(&root, *size);
        let portable = appends(&root.join("data"), BackendChoice::Portable, *size, 1);
        let uring = appends(&root.join("data"), BackendChoice::IoUring, *size, 1);
        let portable_many = appends(&root.join("data"), BackendChoice::Portable, *size, 6);
        let uring_many = appends(&root.join("data"), BackendChoice::IoUring, *size, 6);
        println!(
            "| {label} | {dd:.1} | {portable:.1} | {uring:.1} | {:.0}% | {portable_many:.1} | {uring_many:.1} |",
            uring / dd * 100.0
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
