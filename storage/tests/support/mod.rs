//! Helpers shared by the storage integration tests: a builder for produced record batches,
//! a log manager opener, a blocking append, and a whole-log reader.
//!
//! Each test binary uses a different subset of these helpers, so unused ones are allowed.
#![allow(dead_code)]

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use bytes::Bytes;
use karst_storage::batch::write_varint;
use karst_storage::batch::BatchHeader;
use karst_storage::io::{select_backend, BackendChoice};
use karst_storage::{
    validate_produced, AppendInfo, AppendOrigin, IoBackend, LeaderEpoch, Log, LogConfig, LogError,
    LogManager, LogManagerOptions, Offset, PortableBackend,
};

/// An uncompressed batch of `count` records of `value_bytes` bytes, timestamps from `timestamp`.
pub fn batch(count: usize, value_bytes: usize, timestamp: i64) -> Bytes {
    batch_filled(count, value_bytes, timestamp, 0)
}

/// Like [`batch`], with record values filled from `fill` (so batches of equal shape differ).
pub fn batch_filled(count: usize, value_bytes: usize, timestamp: i64, fill: u8) -> Bytes {
    let mut records = Vec::new();
    for index in 0..count {
        let mut record = vec![0u8];
        write_varint(&mut record, index as i64);
        write_varint(&mut record, index as i64);
        write_varint(&mut record, -1);
        write_varint(&mut record, value_bytes as i64);
        let value_byte = ((index % 251) as u8).wrapping_add(fill);
        record.extend(std::iter::repeat_n(value_byte, value_bytes));
        write_varint(&mut record, 0);
        write_varint(&mut records, record.len() as i64);
        records.extend_from_slice(&record);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.push(2);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&(count as i32 - 1).to_be_bytes());
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&(timestamp + count as i64 - 1).to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.extend_from_slice(&(count as i32).to_be_bytes());
    out.extend_from_slice(&records);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// The bytes a produced batch has on disk: base offset and leader epoch rewritten.
pub fn as_stored(produced: &[u8], base_offset: Offset, epoch: LeaderEpoch) -> Vec<u8> {
    let mut stored = produced.to_vec();
    stored[..8].copy_from_slice(&base_offset.0.to_be_bytes());
    stored[12..16].copy_from_slice(&epoch.0.to_be_bytes());
    stored
}

/// A fresh directory for a test's logs: under `/dev/shm` where it exists, because tests
/// that append thousands of times are then bound by the code under test, not by fsync
/// latency on a busy disk (they simulate crashes in-process, so real durability is not
/// what they measure); elsewhere the usual temporary directory.
pub fn scratch_dir() -> tempfile::TempDir {
    let memory = Path::new("/dev/shm");
    if memory.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(memory) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Opens the log manager of `dir` on the portable backend with default settings.
pub fn open(dir: &Path) -> LogManager {
    open_with(dir, Arc::new(PortableBackend), &LogConfig::default())
}

/// Opens the log manager of `dir` on `backend`, recovering logs with `config`.
pub fn open_with(dir: &Path, backend: Arc<dyn IoBackend>, config: &LogConfig) -> LogManager {
    LogManager::open(
        LogManagerOptions {
            dir: dir.to_path_buf(),
            storage_threads: 2,
            backend,
            min_free_bytes: 0,
            commit_queue_bytes_max: karst_storage::commit_budget::COMMIT_QUEUE_BYTES_MAX_DEFAULT,
        },
        config,
    )
    .unwrap()
}

/// Appends the batches in `bytes` and waits for the append to complete.
pub fn append(manager: &LogManager, log: &Arc<Log>, bytes: Bytes) -> Result<AppendInfo, LogError> {
    append_with_epoch(manager, log, bytes, LeaderEpoch(0))
}

/// Appends the batches in `bytes` under `epoch` and waits for the append to complete.
pub fn append_with_epoch(
    manager: &LogManager,
    log: &Arc<Log>,
    bytes: Bytes,
    epoch: LeaderEpoch,
) -> Result<AppendInfo, LogError> {
    let batches = validate_produced(&bytes, 1 << 24).unwrap();
    let (sender, receiver) = mpsc::channel();
    let queued_bytes: usize = batches.iter().map(|batch| batch.bytes.len()).sum();
    manager.append(
        Arc::clone(log),
        batches,
        AppendOrigin::Leader(epoch),
        manager
            .commit_budget()
            .try_acquire(queued_bytes)
            .expect("room in the commit budget"),
        Box::new(move |outcome| sender.send(outcome).unwrap()),
    );
    receiver.recv().unwrap()
}

/// Reads every batch from `from` to the high watermark; returns (base offset, count) pairs.
pub fn read_all(log: &Log, from: Offset) -> Vec<(i64, i32)> {
    read_all_bytes(log, from)
        .iter()
        .map(|bytes| {
            let header = BatchHeader::parse(bytes).unwrap();
            (header.base_offset.0, header.records_count)
        })
        .collect()
}

/// Reads every batch from `from` to the high watermark, one `Bytes` per batch.
pub fn read_all_bytes(log: &Log, from: Offset) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = from;
    for _ in 0..100_000 {
        let bytes = log.read(offset, 64 * 1024, Offset::MAX).unwrap();
        if bytes.is_empty() {
            break;
        }
        let mut position = 0;
        while let Some(header) = BatchHeader::parse(&bytes[position..]) {
            out.push(bytes.slice(position..position + header.size_bytes));
            offset = header.next_offset();
            position += header.size_bytes;
        }
    }
    out
}

/// The backend for `choice`, or `None` (with a note) when it is not available here. Only
/// `Unsupported` means "not available"; any other error fails the test.
pub fn backend_or_skip(choice: BackendChoice) -> Option<Arc<dyn IoBackend>> {
    match select_backend(choice) {
        Ok(backend) => Some(backend),
        Err(error) if error.kind() == std::io::ErrorKind::Unsupported => {
            println!("skipping the {choice:?} backend: {error}");
            None
        }
        Err(error) => panic!("the {choice:?} backend failed to start: {error}"),
    }
}

/// Every backend this machine and build can run: portable always, io_uring when available.
pub fn available_backends() -> Vec<Arc<dyn IoBackend>> {
    [BackendChoice::Portable, BackendChoice::IoUring]
        .into_iter()
        .filter_map(backend_or_skip)
        .collect()
}

/// Copies the tree under `from` into `to` (which exists): a crashed log directory, so each
/// damage experiment starts from the same files.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The `.log` files of the partition directory `dir`, in offset order.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}
