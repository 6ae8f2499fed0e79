//! Bit flips in stored batches: in the unflushed tail, recovery cuts the damaged batch; in
//! a sealed segment below the recovery point (which recovery does not rescan), a read must
//! fail rather than serve the damaged bytes — also bytes a running log wrote and read before
//! — and `repair_corruption` cuts such a log back to the damaged segment.
//!
//! What a batch's CRC-32C covers decides what can be detected: bytes 21.. (attributes to the
//! last record), checked against the CRC in bytes 17..21. The length (bytes 8..12) and the
//! magic byte (16) are checked by framing. Base offset (0..8) and partition leader epoch
//! (12..16) are rewritten by the broker and covered by nothing, in Kafka as here, so flips
//! there are out of scope.

mod support;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use karst_storage::batch::BatchHeader;
use karst_storage::{LeaderEpoch, Log, LogConfig, Offset, PortableBackend, TopicPartition};

use support::{
    append, as_stored, batch_filled, copy_dir, open_with, read_all_bytes, scratch_dir,
    segment_files,
};

/// Bytes of a batch covered by its CRC-32C, plus the CRC field itself.
const CHECKSUMMED_FROM_BYTE: usize = 17;
/// The length field: damage there breaks framing.
const LENGTH_BYTES: Range<usize> = 8..12;
/// The magic byte: only format 2 is stored.
const MAGIC_BYTE: usize = 16;
/// `lastOffsetDelta`: inside the CRC, but also what a reader trusts to skip a batch.
const LAST_OFFSET_DELTA_BYTES: Range<usize> = 23..27;

/// Records in every batch the tests write.
const RECORDS_PER_BATCH: usize = 4;
const ALL_BITS: [u32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// A log of several batches on disk, and where one chosen batch lies in its segment file.
struct WrittenLog {
    dir: tempfile::TempDir,
    partition: TopicPartition,
    config: LogConfig,
    /// Every batch as stored, in offset order.
    stored: Vec<Vec<u8>>,
    base_offsets: Vec<i64>,
}

impl WrittenLog {
    /// Appends `batches` batches of [`RECORDS_PER_BATCH`] records; shuts down cleanly when `clean`, else
    /// abandons the log as a crash would.
    fn write(config: LogConfig, batches: usize, clean: bool) -> WrittenLog {
        let dir = scratch_dir();
        let partition = TopicPartition::new("flips", 0);
        let mut stored = Vec::new();
        let mut base_offsets = Vec::new();
        let manager = open_with(dir.path(), Arc::new(PortableBackend), &config);
        let log = manager.get_or_create(&partition, config.clone()).unwrap();
        for index in 0..batches {
            let produced = batch_filled(RECORDS_PER_BATCH, 30, 5_000 + index as i64, index as u8);
            let info = append(&manager, &log, produced.clone()).unwrap();
            stored.push(as_stored(&produced, info.base_offset, LeaderEpoch(0)));
            base_offsets.push(info.base_offset.0);
        }
        if clean {
            manager.shutdown().unwrap();
        }
        drop(manager);
        WrittenLog {
            dir,
            partition,
            config,
            stored,
            base_offsets,
        }
    }

    /// A copy of the log directory with bit `bit` of byte `byte` of batch `batch` flipped.
    fn copy_with_flip(&self, batch: usize, byte: usize, bit: u32) -> tempfile::TempDir {
        let copy = scratch_dir();
        copy_dir(self.dir.path(), copy.path());
        let partition_dir = copy.path().join(self.partition.dir_name());
        let (file, start) = self.locate(&partition_dir, batch);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[start + byte] ^= 1 << bit;
        std::fs::write(&file, bytes).unwrap();
        copy
    }

    /// The segment file holding batch `batch` and the byte where the batch starts.
    fn locate(&self, partition_dir: &Path, batch: usize) -> (std::path::PathBuf, usize) {
        let files = segment_files(partition_dir);
        let base = self.base_offsets[batch];
        let file = files
            .iter()
            .rev()
            .find(|f| file_base(f) <= base)
            .expect("a segment holds the batch")
            .clone();
        let segment_base = file_base(&file);
        let start = (0..batch)
            .filter(|&i| self.base_offsets[i] >= segment_base)
            .map(|i| self.stored[i].len())
            .sum();
        (file, start)
    }

    /// Opens a damaged clean-shutdown directory: `None` when the log directory or the log
    /// refuses to open (loudly, which is fine); otherwise the log, after checking that
    /// recovery kept every batch (the damage is below the recovery point: cutting there
    /// would silently drop acknowledged data after it).
    fn try_open(&self, root: &Path) -> Option<(karst_storage::LogManager, Arc<Log>)> {
        let manager = karst_storage::LogManager::open(
            karst_storage::LogManagerOptions {
                dir: root.to_path_buf(),
                storage_threads: 1,
                backend: Arc::new(PortableBackend),
                min_free_bytes: 0,
                commit_queue_bytes_max:
                    karst_storage::commit_budget::COMMIT_QUEUE_BYTES_MAX_DEFAULT,
            },
            &self.config,
        )
        .ok()?;
        let log = manager
            .get(&self.partition)
            .expect("the log is not dropped");
        if log.offline_reason().is_some() {
            return None;
        }
        let end = self.base_offsets.last().unwrap() + RECORDS_PER_BATCH as i64;
        assert_eq!(
            log.offsets().log_end_offset,
            Offset(end),
            "recovery cut a sealed segment at the damage, dropping the batches after it"
        );
        Some((manager, log))
    }

    fn open(&self, root: &Path) -> (karst_storage::LogManager, Arc<Log>) {
        let manager = open_with(root, Arc::new(PortableBackend), &self.config);
        let log = manager.get(&self.partition).expect("the log opens");
        (manager, log)
    }
}

fn file_base(file: &Path) -> i64 {
    file.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Crash recovery after flipping `bits` of `byte` of the last batch (one experiment per
/// bit) cuts that batch and nothing else.
fn assert_tail_flip_is_cut(written: &WrittenLog, byte: usize, bits: &[u32]) {
    let last = written.stored.len() - 1;
    for &bit in bits {
        let copy = written.copy_with_flip(last, byte, bit);
        let (_manager, log) = written.open(copy.path());
        let end = Offset(written.base_offsets[last]);
        assert_eq!(
            log.offsets().log_end_offset,
            end,
            "flip of bit {bit} of byte {byte} was not cut"
        );
        let read = read_all_bytes(&log, Offset(0));
        assert_eq!(read.len(), last);
        assert!(read
            .iter()
            .zip(&written.stored)
            .all(|(r, s)| r[..] == s[..]));
    }
}

#[test]
fn a_flipped_bit_anywhere_in_the_checksummed_bytes_of_the_unflushed_last_batch_is_cut() {
    let written = WrittenLog::write(LogConfig::default(), 5, false);
    let size = written.stored.last().unwrap().len();
    for byte in CHECKSUMMED_FROM_BYTE..size {
        assert_tail_flip_is_cut(&written, byte, &[byte as u32 % 8, 7 - byte as u32 % 8]);
    }
}

#[test]
fn a_flipped_bit_in_the_length_of_the_unflushed_last_batch_is_cut() {
    let written = WrittenLog::write(LogConfig::default(), 5, false);
    for byte in LENGTH_BYTES {
        assert_tail_flip_is_cut(&written, byte, &ALL_BITS);
    }
}

#[test]
fn a_flipped_bit_in_the_magic_byte_of_the_unflushed_last_batch_is_cut() {
    let written = WrittenLog::write(LogConfig::default(), 5, false);
    assert_tail_flip_is_cut(&written, MAGIC_BYTE, &ALL_BITS);
}

/// After a clean shutdown, a flip of `bit` of `byte` in a sealed batch is never served and
/// never costs other data. Refusing to open the log is acceptable (loud); opening it is
/// acceptable if nothing was cut, a read at the batch fails, and reading the log from the
/// start stops with an error before it, having served only undamaged batches.
fn assert_sealed_flip_is_never_served(written: &WrittenLog, batch: usize, byte: usize, bit: u32) {
    let base = Offset(written.base_offsets[batch]);
    let copy = written.copy_with_flip(batch, byte, bit);
    let Some((_manager, log)) = written.try_open(copy.path()) else {
        return;
    };
    for max_bytes in [1, 64 * 1024] {
        let outcome = log.read(base, max_bytes, Offset::MAX);
        assert!(
            outcome.is_err(),
            "byte {byte} bit {bit} flipped: a read at {base} served {:?}",
            outcome.map(|b| b.len())
        );
        // The log is offline for a damaged batch, so its replica can heal from the others.
        assert!(
            log.corrupt_segment().is_some(),
            "byte {byte} bit {bit} flipped: the read failed ({:?}) but the log is not offline for damage",
            log.offline_reason()
        );
    }
    let copy = written.copy_with_flip(batch, byte, bit);
    let (_manager, log) = written.try_open(copy.path()).expect("opened before");
    let mut offset = Offset(0);
    loop {
        let bytes = match log.read(offset, 1_000, Offset::MAX) {
            Ok(bytes) if bytes.is_empty() => {
                panic!("byte {byte} bit {bit} flipped: read past it to the end")
            }
            Ok(bytes) => bytes,
            Err(_) => break,
        };
        let mut position = 0;
        while let Some(header) = BatchHeader::parse(&bytes[position..]) {
            let served = &bytes[position..position + header.size_bytes];
            assert!(
                written.stored.iter().any(|s| s[..] == served[..]),
                "byte {byte} bit {bit} flipped: served bytes that were never appended"
            );
            assert!(
                header.base_offset < base,
                "byte {byte} bit {bit} flipped: served batch {} at or after the damaged one",
                header.base_offset
            );
            position += header.size_bytes;
            offset = header.next_offset();
        }
    }
}

fn sealed_log() -> (WrittenLog, usize) {
    // Small segments, closed cleanly: recovery opens all but the last from their indexes
    // and never reads the batches of the sealed ones.
    let config = LogConfig {
        segment_bytes: 1_000,
        ..LogConfig::default()
    };
    let written = WrittenLog::write(config, 20, true);
    let partition_dir = written.dir.path().join(written.partition.dir_name());
    assert!(segment_files(&partition_dir).len() >= 3);
    // The second batch of the first segment: a sealed segment, not its first batch.
    (written, 1)
}

#[test]
fn a_flipped_bit_in_the_checksummed_bytes_of_a_sealed_segment_is_never_served() {
    let (written, batch) = sealed_log();
    // `lastOffsetDelta` has its own test below.
    let bytes = (CHECKSUMMED_FROM_BYTE..written.stored[batch].len())
        .filter(|byte| !LAST_OFFSET_DELTA_BYTES.contains(byte));
    for byte in bytes {
        assert_sealed_flip_is_never_served(&written, batch, byte, byte as u32 % 8);
    }
}

#[test]
fn a_flipped_bit_in_the_last_offset_delta_of_a_sealed_batch_is_never_served() {
    // Flipping the sign bit (bit 7 of byte 23) makes the batch claim to end before it
    // starts: a read at its offsets then returns the batch after it, without an error.
    let (written, batch) = sealed_log();
    for byte in LAST_OFFSET_DELTA_BYTES {
        for bit in ALL_BITS {
            assert_sealed_flip_is_never_served(&written, batch, byte, bit);
        }
    }
}

#[test]
fn a_flipped_bit_in_the_length_of_a_batch_in_a_sealed_segment_is_never_served() {
    let (written, batch) = sealed_log();
    for byte in LENGTH_BYTES {
        for bit in ALL_BITS {
            assert_sealed_flip_is_never_served(&written, batch, byte, bit);
        }
    }
}

#[test]
fn a_flipped_bit_in_the_magic_byte_of_a_batch_in_a_sealed_segment_is_never_served() {
    let (written, batch) = sealed_log();
    for bit in ALL_BITS {
        assert_sealed_flip_is_never_served(&written, batch, MAGIC_BYTE, bit);
    }
}

/// Bit `bit` of byte `byte` of the segment file at `path` flipped in place, through the
/// file (so the page cache holds the damage, as a running broker would read it).
fn flip_in_place(path: &Path, byte: u64, bit: u32) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut value = [0u8];
    file.read_exact_at(&mut value, byte).unwrap();
    value[0] ^= 1 << bit;
    file.write_all_at(&value, byte).unwrap();
}

#[test]
fn a_bit_flipped_under_a_running_log_is_never_served_even_in_bytes_read_before() {
    let dir = scratch_dir();
    let partition = TopicPartition::new("flips", 0);
    let config = LogConfig {
        segment_bytes: 1_000,
        ..LogConfig::default()
    };
    let manager = open_with(dir.path(), Arc::new(PortableBackend), &config);
    let log = manager.get_or_create(&partition, config.clone()).unwrap();
    for index in 0..20 {
        append(
            &manager,
            &log,
            batch_filled(RECORDS_PER_BATCH, 30, 5_000 + index, index as u8),
        )
        .unwrap();
    }
    // Read (and so verify) everything once: the bytes this process wrote and checked.
    assert!(!read_all_bytes(&log, Offset(0)).is_empty());
    let first = segment_files(&dir.path().join(partition.dir_name()))[0].clone();
    flip_in_place(&first, 40, 3);
    let outcome = log.read(Offset(0), 64 * 1024, Offset::MAX);
    assert!(
        outcome.is_err(),
        "a flipped bit in bytes verified before was served"
    );
    assert!(log.offline_reason().unwrap().contains("CRC mismatch"));
    assert_eq!(log.corrupt_segment(), Some(Offset(0)));
}

#[test]
fn repairing_a_damaged_log_cuts_the_damaged_segment_and_later_ones_and_brings_it_back() {
    let (written, batch) = sealed_log();
    let copy = written.copy_with_flip(batch, 40, 5);
    let (manager, log) = written.open(copy.path());
    let end_before = log.offsets().log_end_offset;
    assert!(log.read(Offset(0), 64 * 1024, Offset::MAX).is_err());
    assert!(!log.is_online());
    assert_eq!(log.corrupt_segment(), Some(Offset(0)));

    let end = manager.repair_corruption(&log).unwrap();
    assert_eq!(
        end,
        Offset(0),
        "the damaged first segment and all after it go"
    );
    assert!(log.is_online());
    assert_eq!(log.corrupt_segment(), None);
    assert_eq!(log.offsets().log_end_offset, Offset(0));
    // The log takes the records again (a follower refetches them) and serves them.
    for index in 0..written.stored.len() {
        let produced = batch_filled(RECORDS_PER_BATCH, 30, 5_000 + index as i64, index as u8);
        append(&manager, &log, produced).unwrap();
    }
    assert_eq!(log.offsets().log_end_offset, end_before);
    let read: Vec<Vec<u8>> = read_all_bytes(&log, Offset(0))
        .iter()
        .map(|batch| batch.to_vec())
        .collect();
    assert_eq!(read, written.stored);
}

#[test]
fn only_a_log_offline_for_a_damaged_batch_can_be_repaired() {
    let written = WrittenLog::write(LogConfig::default(), 3, true);
    let (manager, log) = written.open(written.dir.path());
    assert!(manager.repair_corruption(&log).is_err(), "an online log");
    log.take_offline("a failed sync".into());
    assert_eq!(log.corrupt_segment(), None);
    assert!(
        manager.repair_corruption(&log).is_err(),
        "offline for a failed write"
    );
    assert!(!log.is_online());
}
