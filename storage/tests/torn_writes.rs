//! Crash recovery of torn writes: a log directory as a crash left it, with the last write
//! cut short at every possible byte, must recover to exactly the batches before the torn
//! one, byte for byte, and keep appending at the right offset.
//!
//! Each experiment copies one crashed directory (written once per test) into a fresh one,
//! damages it, and opens it without a clean-shutdown marker, so recovery scans and cuts.

mod support;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use karst_storage::{IoBackend, LeaderEpoch, LogConfig, Offset, TopicPartition};

use support::{
    append, as_stored, available_backends, batch_filled, copy_dir, open_with, read_all_bytes,
    scratch_dir, segment_files,
};

/// A log written and then abandoned without a shutdown: what a crash leaves on disk.
struct CrashedLog {
    dir: tempfile::TempDir,
    partition: TopicPartition,
    config: LogConfig,
    /// Every batch as stored (base offset rewritten), in offset order.
    stored: Vec<Vec<u8>>,
    base_offsets: Vec<i64>,
}

impl CrashedLog {
    /// Appends batches of the given record counts, one produce request each, then "crashes".
    fn write(config: LogConfig, record_counts: &[usize]) -> CrashedLog {
        let dir = scratch_dir();
        let partition = TopicPartition::new("torn", 0);
        let mut stored = Vec::new();
        let mut base_offsets = Vec::new();
        {
            let manager = open_with(
                dir.path(),
                Arc::new(karst_storage::PortableBackend),
                &config,
            );
            let log = manager.get_or_create(&partition, config.clone()).unwrap();
            for (index, &records) in record_counts.iter().enumerate() {
                let produced = batch_filled(records, 40 + index, 1_000 + index as i64, index as u8);
                let info = append(&manager, &log, produced.clone()).unwrap();
                stored.push(as_stored(&produced, info.base_offset, LeaderEpoch(0)));
                base_offsets.push(info.base_offset.0);
            }
            // No shutdown: no clean-shutdown marker and no checkpoints.
        }
        CrashedLog {
            dir,
            partition,
            config,
            stored,
            base_offsets,
        }
    }

    fn partition_dir(&self, root: &Path) -> std::path::PathBuf {
        root.join(self.partition.dir_name())
    }

    /// A copy of the crashed directory to damage.
    fn copy(&self) -> tempfile::TempDir {
        let copy = scratch_dir();
        copy_dir(self.dir.path(), copy.path());
        copy
    }

    /// Opens `root` (recovering it) and checks that the log holds exactly the first `kept`
    /// batches, byte for byte, and that the next append gets the offset after them.
    fn assert_recovers_to(&self, root: &Path, kept: usize, backend: &Arc<dyn IoBackend>) {
        let manager = open_with(root, Arc::clone(backend), &self.config);
        let log = manager.get(&self.partition).expect("the log is recovered");
        let end = self
            .base_offsets
            .get(kept)
            .copied()
            .expect("a batch was torn");
        let offsets = log.offsets();
        assert_eq!(offsets.log_end_offset, Offset(end), "log end offset");
        assert_eq!(offsets.durable_end_offset, Offset(end), "high watermark");
        let read: Vec<Bytes> = read_all_bytes(&log, Offset(0));
        assert_eq!(read.len(), kept, "batches that survive recovery");
        for (index, (got, want)) in read.iter().zip(&self.stored).enumerate() {
            assert!(got[..] == want[..], "batch #{index} changed in recovery");
        }
        let next = batch_filled(2, 10, 9_999, 0xee);
        let info = append(&manager, &log, next.clone()).unwrap();
        assert_eq!(
            info.base_offset,
            Offset(end),
            "appends continue after the cut"
        );
        let last = read_all_bytes(&log, Offset(end));
        assert_eq!(last.len(), 1);
        assert!(last[0][..] == as_stored(&next, Offset(end), LeaderEpoch(0))[..]);
    }
}

#[test]
fn a_torn_last_batch_is_cut_at_every_byte_boundary_and_appends_continue_after_it() {
    let crashed = CrashedLog::write(LogConfig::default(), &[3, 1, 4, 1, 5, 2]);
    let segment = &segment_files(&crashed.partition_dir(crashed.dir.path()))[0];
    let full_bytes = std::fs::metadata(segment).unwrap().len();
    let last_bytes = crashed.stored.last().unwrap().len() as u64;
    let last_start = full_bytes - last_bytes;
    for backend in available_backends() {
        // Every length from the start of the last batch to one byte short of its end.
        for cut in last_start..full_bytes {
            let copy = crashed.copy();
            let file = &segment_files(&crashed.partition_dir(copy.path()))[0];
            std::fs::OpenOptions::new()
                .write(true)
                .open(file)
                .unwrap()
                .set_len(cut)
                .unwrap();
            crashed.assert_recovers_to(copy.path(), crashed.stored.len() - 1, &backend);
        }
    }
}

#[test]
fn a_last_batch_whose_tail_reads_back_as_zeros_is_cut_on_recovery() {
    // A crash after the file grew but before its data reached the disk leaves zeros
    // where the batch should be (the file keeps its length).
    let crashed = CrashedLog::write(LogConfig::default(), &[2, 7, 1, 3]);
    let segment = &segment_files(&crashed.partition_dir(crashed.dir.path()))[0];
    let pristine = std::fs::read(segment).unwrap();
    let last_start = pristine.len() - crashed.stored.last().unwrap().len();
    for backend in available_backends() {
        for zeros_from in last_start..pristine.len() {
            let copy = crashed.copy();
            let file = &segment_files(&crashed.partition_dir(copy.path()))[0];
            let mut damaged = pristine.clone();
            damaged[zeros_from..].fill(0);
            if damaged == pristine {
                // The batch already ends in zero bytes (empty record header counts).
                continue;
            }
            std::fs::write(file, damaged).unwrap();
            crashed.assert_recovers_to(copy.path(), crashed.stored.len() - 1, &backend);
        }
    }
}

/// A log over several small segments (three or four batches each) and the batch to tear:
/// the second of the second segment, so a later segment exists after it.
fn crashed_log_over_several_segments() -> (CrashedLog, usize) {
    let config = LogConfig {
        segment_bytes: 700,
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    let crashed = CrashedLog::write(config, &[2; 14]);
    let segments = segment_files(&crashed.partition_dir(crashed.dir.path()));
    assert!(segments.len() >= 4, "{} segments", segments.len());
    let second_base = segment_base(&segments[1]);
    let first_of_second = crashed
        .base_offsets
        .iter()
        .position(|&base| base == second_base)
        .expect("a batch starts the segment");
    (crashed, first_of_second + 1)
}

/// Cuts the second segment file of a copy of `crashed` to `cut` bytes, recovers, and
/// checks the log ends before batch `torn` with only the first two segments left.
fn assert_cut_in_second_segment_recovers(crashed: &CrashedLog, torn: usize, cut: u64) {
    let first_segments: Vec<i64> = segment_files(&crashed.partition_dir(crashed.dir.path()))[..2]
        .iter()
        .map(|f| segment_base(f))
        .collect();
    for backend in available_backends() {
        let copy = crashed.copy();
        let copied_dir = crashed.partition_dir(copy.path());
        let file = &segment_files(&copied_dir)[1];
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .unwrap()
            .set_len(cut)
            .unwrap();
        crashed.assert_recovers_to(copy.path(), torn, &backend);
        let left: Vec<i64> = segment_files(&copied_dir)
            .iter()
            .map(|f| segment_base(f))
            .collect();
        assert_eq!(
            left, first_segments,
            "segments after the torn one are deleted"
        );
    }
}

#[test]
fn a_torn_batch_in_an_earlier_segment_cuts_the_log_there_and_deletes_the_later_segments() {
    let (crashed, torn) = crashed_log_over_several_segments();
    // The torn batch starts after the segment's first batch.
    let torn_start = crashed.stored[torn - 1].len() as u64;
    let torn_end = torn_start + crashed.stored[torn].len() as u64;
    // Every length that ends inside the torn batch (a cut exactly at its start has its
    // own test below).
    for cut in torn_start + 1..torn_end {
        assert_cut_in_second_segment_recovers(&crashed, torn, cut);
    }
}

#[test]
fn a_segment_cut_at_a_batch_boundary_before_a_later_segment_leaves_no_hole_in_the_offsets() {
    // The second segment loses its tail exactly at a batch boundary: every batch left in
    // it is whole, but its offsets now end before the next segment's base offset. Keeping
    // the later segments would leave a hole of acknowledged-looking offsets in the log.
    let (crashed, torn) = crashed_log_over_several_segments();
    let torn_start = crashed.stored[torn - 1].len() as u64;
    assert_cut_in_second_segment_recovers(&crashed, torn, torn_start);
}

/// The base offset in a segment file's name.
fn segment_base(file: &Path) -> i64 {
    file.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// A backend that, for one group, first runs a hook (a checkpoint racing the group, then a
/// snapshot of the directory as a crash would leave it: none of the group's bytes written)
/// and then does the group's I/O on `inner`.
struct CrashDuringGroup {
    inner: Arc<dyn IoBackend>,
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl IoBackend for CrashDuringGroup {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn run(
        &self,
        jobs: &[karst_storage::io::FileJob<'_>],
    ) -> Vec<Result<(), karst_storage::io::JobError>> {
        if let Some(hook) = self.hook.lock().unwrap().take() {
            hook();
        }
        self.inner.run(jobs)
    }
}

#[test]
fn a_checkpoint_while_a_group_rolls_many_tiny_segments_trusts_no_unsynced_tail() {
    // Segments of a few hundred bytes: one request of many batches rolls again and again
    // while its group is planned, before any of its bytes are written or synced. The
    // segments sealed by those rolls have their indexes written, describing batches that
    // are not on disk yet. A recovery-point checkpoint taken at that moment must stay at
    // the synced end, or a crash then would load those segments from their indexes without
    // a scan and trust a tail that was never written.
    let config = LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 50,
        ..LogConfig::default()
    };
    for backend in available_backends() {
        let dir = scratch_dir();
        let crash_copy = scratch_dir();
        let partition = TopicPartition::new("tiny", 0);
        let crashing = Arc::new(CrashDuringGroup {
            inner: Arc::clone(&backend),
            hook: std::sync::Mutex::new(None),
        });
        let manager = Arc::new(open_with(
            dir.path(),
            Arc::clone(&crashing) as Arc<dyn IoBackend>,
            &config,
        ));
        let log = manager.get_or_create(&partition, config.clone()).unwrap();
        // 1. Synced, acknowledged batches over a few segments.
        let mut stored = Vec::new();
        let mut base_offsets = Vec::new();
        for index in 0..5 {
            let produced = batch_filled(2, 60, 1_000 + index, index as u8);
            let info = append(&manager, &log, produced.clone()).unwrap();
            stored.push(as_stored(&produced, info.base_offset, LeaderEpoch(0)));
            base_offsets.push(info.base_offset.0);
        }
        let synced_end = log.offsets().log_end_offset;
        let segments_before = log.segment_count();
        // 2. Arm the crash: when the next group's I/O starts, checkpoint, then copy.
        {
            let manager = Arc::downgrade(&manager);
            let (root, copy) = (dir.path().to_path_buf(), crash_copy.path().to_path_buf());
            *crashing.hook.lock().unwrap() = Some(Box::new(move || {
                let manager = manager.upgrade().expect("the manager is open");
                manager.checkpoint().unwrap();
                copy_dir(&root, &copy);
            }));
        }
        // 3. One request of twelve batches: about one roll per batch, in one group.
        let group: Vec<Bytes> = (0..12)
            .map(|index| batch_filled(2, 60, 2_000 + index, 0x80 + index as u8))
            .collect();
        let first_lost = synced_end.0;
        base_offsets.push(first_lost);
        let info = append(&manager, &log, Bytes::from(group.concat())).unwrap();
        assert_eq!(info.base_offset, synced_end);
        let rolls = log.segment_count() - segments_before;
        assert!(rolls >= 8, "only {rolls} rolls inside the group");
        // 4. The crash copy recovers to the synced batches, not to the rolls' indexes.
        let crashed = CrashedLog {
            dir: crash_copy,
            partition: partition.clone(),
            config: config.clone(),
            stored,
            base_offsets,
        };
        let kept = crashed.stored.len();
        crashed.assert_recovers_to(crashed.dir.path(), kept, &backend);
    }
}
