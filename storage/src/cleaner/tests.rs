//! Compaction, specified through a real log: append, clean, read back, reopen.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{mpsc, Arc};

use bytes::{Bytes, BytesMut};
use proto_kafka::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;
use crate::batch::validate_produced;
use crate::config::LogConfig;
use crate::io::PortableBackend;
use crate::log::AppendOrigin;
use crate::manager::LogManagerOptions;
use crate::types::LeaderEpoch;

const NOW_MS: i64 = 1_700_000_000_000;
const HOUR_MS: i64 = 3_600_000;

fn compacted_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        cleanup_compact: true,
        cleanup_delete: false,
        min_cleanable_dirty_ratio: 0.01,
        delete_retention_ms: HOUR_MS,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

fn open_manager(dir: &Path) -> LogManager {
    LogManager::open(
        LogManagerOptions {
            dir: dir.to_path_buf(),
            storage_threads: 1,
            backend: Arc::new(PortableBackend),
            min_free_bytes: 0,
            commit_queue_bytes_max: crate::commit_budget::COMMIT_QUEUE_BYTES_MAX_DEFAULT,
        },
        &compacted_config(),
    )
    .unwrap()
}

/// Partition `compacted-0`, created in `manager` with the compacted test config.
fn compacted_log(manager: &LogManager) -> (TopicPartition, Arc<Log>) {
    let partition = TopicPartition::new("compacted", 0);
    let log = manager
        .get_or_create(&partition, compacted_config())
        .unwrap();
    (partition, log)
}

/// One produced batch of `(key, value)` records (`None` value: a tombstone).
fn produced(records: &[(&str, Option<String>)], compression: Compression) -> Bytes {
    let keyed: Vec<(Option<&str>, Option<String>)> = records
        .iter()
        .map(|(key, value)| (Some(*key), value.clone()))
        .collect();
    produced_maybe_keyed(&keyed, compression)
}

/// Like `produced`, with records that may lack a key.
fn produced_maybe_keyed(
    records: &[(Option<&str>, Option<String>)],
    compression: Compression,
) -> Bytes {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(index, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon_ms: None,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            sequence: -1,
            timestamp: NOW_MS - HOUR_MS + index as i64,
            key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
            value: value.as_ref().map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: Vec::new(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buffer, &records, &options).unwrap();
    buffer.freeze()
}

fn append(manager: &LogManager, log: &Arc<Log>, bytes: Bytes) -> crate::log::AppendInfo {
    let batches = validate_produced(&bytes, 1 << 20).unwrap();
    let (sender, receiver) = mpsc::channel();
    let queued_bytes: usize = batches.iter().map(|batch| batch.bytes.len()).sum();
    manager.append(
        Arc::clone(log),
        batches,
        AppendOrigin::Leader(LeaderEpoch(0)),
        manager
            .commit_budget()
            .try_acquire(queued_bytes)
            .expect("room in the commit budget"),
        Box::new(move |outcome| sender.send(outcome).unwrap()),
    );
    receiver.recv().unwrap().unwrap()
}

/// A consumed record: offset, key, value.
type Consumed = (i64, String, Option<String>);

/// Every batch from the log start to the high watermark, as a consumer reads them.
fn read_batches(log: &Log) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut offset = log.offsets().log_start_offset;
    let end = log.offsets().durable_end_offset;
    while offset < end {
        let bytes = log.read(offset, 4096, Offset::MAX).unwrap();
        assert!(
            !bytes.is_empty(),
            "a read at {offset} below {end} found nothing"
        );
        let mut position = 0;
        while let Some(header) = BatchHeader::parse(&bytes[position..]) {
            batches.push(bytes.slice(position..position + header.size_bytes));
            offset = header.next_offset();
            position += header.size_bytes;
        }
    }
    batches
}

fn consume(log: &Log) -> Vec<Consumed> {
    let mut consumed = Vec::new();
    for batch in read_batches(log) {
        let mut bytes = batch.clone();
        let set = RecordBatchDecoder::decode(&mut bytes).unwrap();
        for record in set.records {
            let text = |b: Option<Bytes>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
            consumed.push((record.offset, text(record.key).unwrap(), text(record.value)));
        }
    }
    consumed
}

/// Appends `updates` one-record batches cycling over `keys` keys; value = `v<offset>`.
fn append_updates(manager: &LogManager, log: &Arc<Log>, updates: usize, keys: usize) {
    for update in 0..updates {
        let offset = log.offsets().log_end_offset.0;
        let key = format!("key-{}", update % keys);
        append(
            manager,
            log,
            produced(&[(&key, Some(format!("v{offset}")))], Compression::None),
        );
    }
}

fn cleaner_for(dir: &Path) -> Cleaner {
    Cleaner::new(&CleanerOptions::default(), dir).unwrap()
}

/// The latest record per key among `records` below `end`, and every record from `end`.
fn expected_after_cleaning(records: &[Consumed], end: i64) -> Vec<Consumed> {
    let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
    for (offset, key, _) in records.iter().filter(|r| r.0 < end) {
        latest.insert(key, *offset);
    }
    records
        .iter()
        .filter(|(offset, key, _)| *offset >= end || latest[key.as_str()] == *offset)
        .cloned()
        .collect()
}

#[test]
fn compaction_keeps_the_latest_record_per_key_at_its_original_offset() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open_manager(dir.path());
    let (partition, log) = compacted_log(&manager);
    append_updates(&manager, &log, 400, 7);
    let before = consume(&log);
    let segments_before = log.segment_count();
    assert!(
        segments_before > 5,
        "rolled into {segments_before} segments"
    );

    let mut cleaner = cleaner_for(dir.path());
    let stats = cleaner.clean_log(&log, NOW_MS).unwrap();

    assert!(stats.segments_replaced >= segments_before - 2, "{stats:?}");
    assert_eq!(stats.records_kept, 7);
    let after = consume(&log);
    assert_eq!(after, expected_after_cleaning(&before, stats.cleaned_to.0));
    assert!(
        after.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets increase"
    );
    // A second round merges the small cleaned segments.
    let again = cleaner.clean_log(&log, NOW_MS).unwrap();
    assert_eq!(again.records_kept, 7);
    assert_eq!(consume(&log), after);
    assert_eq!(
        log.segment_count(),
        2,
        "one cleaned segment and the active one"
    );
    // Appends continue after the last offset, and every offset in a gap reads the next record.
    assert_eq!(log.offsets().log_end_offset, Offset(400));
    for offset in 0..400 {
        let bytes = log.read(Offset(offset), 1, Offset::MAX).unwrap();
        let header = BatchHeader::parse(&bytes).unwrap();
        assert!(header.next_offset() > Offset(offset));
    }
    // The cleaned log survives a clean restart and a crash recovery unchanged.
    manager.shutdown().unwrap();
    drop(manager);
    let manager = open_manager(dir.path());
    assert_eq!(consume(&manager.get(&partition).unwrap()), after);
    drop(manager);
    std::fs::remove_file(dir.path().join("recovery-point-offset-checkpoint")).unwrap();
    let manager = open_manager(dir.path());
    assert_eq!(consume(&manager.get(&partition).unwrap()), after);
}

#[test]
fn a_cleaning_round_checkpoints_recovery_points_first_so_a_crash_keeps_the_cleaned_log() {
    // Recovery requires segments above the checkpointed recovery point to be contiguous;
    // cleaned segments have gaps, so the cleaner must never leave one above it.
    let dir = tempfile::tempdir().unwrap();
    let manager = open_manager(dir.path());
    let (partition, log) = compacted_log(&manager);
    // A recovery point on disk from before any data: stale once the appends roll segments.
    manager.checkpoint().unwrap();
    append_updates(&manager, &log, 400, 7);

    let mut cleaner = cleaner_for(dir.path());
    let (cleaned, stats) = cleaner
        .clean_filthiest(&manager, NOW_MS)
        .unwrap()
        .expect("the log is dirty enough to clean");
    assert_eq!(cleaned, partition);
    assert_eq!(stats.records_kept, 7);
    let after = consume(&log);
    let end = log.offsets().log_end_offset;

    // A crash: no shutdown, so the next open recovers the segments above the checkpoint.
    drop(log);
    drop(manager);
    let manager = open_manager(dir.path());
    let recovered = manager.get(&partition).unwrap();
    assert_eq!(consume(&recovered), after);
    assert_eq!(recovered.offsets().log_end_offset, end);
}

#[test]
fn tombstones_stay_for_delete_retention_ms_after_their_first_cleaning_then_go() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open_manager(dir.path());
    let log = manager
        .get_or_create(&TopicPartition::new("tombstones", 0), compacted_config())
        .unwrap();
    append_updates(&manager, &log, 100, 5);
    append(
        &manager,
        &log,
        produced(&[("key-1", None)], Compression::None),
    );
    append(
        &manager,
        &log,
        produced(&[("key-2", None)], Compression::None),
    );
    append_updates(&manager, &log, 60, 1); // key-0 only: rolls the tombstones into sealed segments
    let mut cleaner = cleaner_for(dir.path());

    cleaner.clean_filthiest(&manager, NOW_MS).unwrap().unwrap();
    let tombstones = |log: &Log| {
        consume(log)
            .into_iter()
            .filter(|(_, _, value)| value.is_none())
            .map(|(offset, key, _)| (offset, key))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tombstones(&log),
        vec![(100, "key-1".to_owned()), (101, "key-2".to_owned())],
        "tombstones are kept by the first cleaning"
    );
    // Nothing new: no cleaning until the horizon passes.
    assert!(cleaner
        .clean_filthiest(&manager, NOW_MS + HOUR_MS - 1)
        .unwrap()
        .is_none());
    assert_eq!(tombstones(&log).len(), 2);
    // At the horizon the log is due again and the tombstones go.
    cleaner
        .clean_filthiest(&manager, NOW_MS + HOUR_MS)
        .unwrap()
        .unwrap();
    assert!(tombstones(&log).is_empty());
    let keys: Vec<String> = consume(&log).into_iter().map(|r| r.1).collect();
    assert!(
        !keys.iter().any(|k| k == "key-1" || k == "key-2"),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k == "key-3"));
}

#[test]
fn compressed_batches_keep_their_codec_offsets_and_last_offset_delta() {
    for compression in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let manager = open_manager(dir.path());
        let log = manager
            .get_or_create(&TopicPartition::new("compressed", 0), compacted_config())
            .unwrap();
        for round in 0..60 {
            let records: Vec<(String, Option<String>)> = (0..8)
                .map(|index| {
                    // Each batch rewrites keys 0..4, and its last record has a key of its own.
                    let key = if index == 7 {
                        format!("last-{}", round % 3)
                    } else {
                        format!("key-{}", index % 4)
                    };
                    (key, Some(format!("r{round}-{index}")))
                })
                .collect();
            let borrowed: Vec<(&str, Option<String>)> = records
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            append(&manager, &log, produced(&borrowed, compression));
        }
        let before = consume(&log);
        let ends_before: Vec<i64> = read_batches(&log)
            .iter()
            .map(|b| BatchHeader::parse(b).unwrap().next_offset().0)
            .collect();

        let stats = cleaner_for(dir.path()).clean_log(&log, NOW_MS).unwrap();

        assert!(stats.records_kept < stats.records_read, "{stats:?}");
        assert_eq!(
            consume(&log),
            expected_after_cleaning(&before, stats.cleaned_to.0),
            "{compression:?}"
        );
        for batch in read_batches(&log) {
            let header = BatchHeader::parse(&batch).unwrap();
            assert!(crate::batch::crc_matches(&batch, &header));
            assert!(
                ends_before.contains(&header.next_offset().0),
                "{compression:?}: a batch keeps the offset after it"
            );
            if header.records_count > 0 {
                assert_eq!(header.compression_codec(), compression as i16);
            }
        }
    }
}

#[test]
fn a_crash_before_the_swap_keeps_the_old_segments_and_one_after_it_completes_the_swap() {
    // Two logs get the same appends and the same first cleaning. The second round of the
    // first log merges several small cleaned segments into one; its files are planted in
    // the second log as a crashed cleaner would have left them.
    let cleaned_dir = tempfile::tempdir().unwrap();
    let crashed_dir = tempfile::tempdir().unwrap();
    let partition = TopicPartition::new("swap", 0);
    let mut logs = Vec::new();
    for dir in [cleaned_dir.path(), crashed_dir.path()] {
        let manager = open_manager(dir);
        let log = manager
            .get_or_create(&partition, compacted_config())
            .unwrap();
        append_updates(&manager, &log, 150, 3);
        append_updates(&manager, &log, 40, 1); // key-0: seals the first 150 updates
        cleaner_for(dir).clean_log(&log, NOW_MS).unwrap();
        append_updates(&manager, &log, 150, 2); // key-2 keeps its record from before
        logs.push((manager, log));
    }
    let (crashed_manager, crashed_log) = logs.pop().unwrap();
    let (cleaned_manager, cleaned_log) = logs.pop().unwrap();
    let before = consume(&crashed_log);
    let segments_before = crashed_log.segment_count();
    cleaner_for(cleaned_dir.path())
        .clean_log(&cleaned_log, NOW_MS)
        .unwrap();
    let cleaned = consume(&cleaned_log);
    cleaned_manager.shutdown().unwrap();
    crashed_manager.shutdown().unwrap();
    drop((crashed_manager, crashed_log));
    let cleaned_files = cleaned_dir.path().join(partition.dir_name());
    let crashed_files = crashed_dir.path().join(partition.dir_name());
    let first = "00000000000000000000";
    let plant = |suffix: &str| {
        for extension in ["log", "index", "timeindex"] {
            std::fs::copy(
                cleaned_files.join(format!("{first}.{extension}")),
                crashed_files.join(format!("{first}.{extension}.{suffix}")),
            )
            .unwrap();
        }
    };

    // Crash 1: only `.cleaned` files were written. They are deleted; nothing changes.
    plant("cleaned");
    let manager = open_manager(crashed_dir.path());
    assert_eq!(consume(&manager.get(&partition).unwrap()), before);
    assert!(!crashed_files.join(format!("{first}.log.cleaned")).exists());
    manager.shutdown().unwrap();
    drop(manager);

    // Crash 2: past the `.swap` commit point, with one replaced segment already renamed
    // to `.deleted`. Opening completes the swap.
    plant("swap");
    let swap_end =
        swap::next_offset_of(&crashed_files.join(format!("{first}.log.swap")), Offset(0)).unwrap();
    let replaced: Vec<String> = std::fs::read_dir(&crashed_files)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.strip_suffix(".log")
                .and_then(|stem| stem.parse::<i64>().ok())
                .is_some_and(|base| base > 0 && base < swap_end.0)
        })
        .collect();
    assert!(!replaced.is_empty(), "the planted segment replaces several");
    std::fs::rename(
        crashed_files.join(&replaced[0]),
        crashed_files.join(format!("{}.deleted", replaced[0])),
    )
    .unwrap();
    let manager = open_manager(crashed_dir.path());
    let recovered = consume(&manager.get(&partition).unwrap());
    assert!(manager.get(&partition).unwrap().segment_count() < segments_before);
    // The first segment after the swapped one starts where the replaced group ended.
    let mut bases: Vec<i64> = std::fs::read_dir(&crashed_files)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log").and_then(|stem| stem.parse().ok())
        })
        .collect();
    bases.sort();
    let group_end = bases[1];
    assert!(group_end >= swap_end.0);
    let below = |records: &[Consumed]| -> Vec<Consumed> {
        records
            .iter()
            .filter(|r| r.0 < group_end)
            .cloned()
            .collect()
    };
    let from = |records: &[Consumed]| -> Vec<Consumed> {
        records
            .iter()
            .filter(|r| r.0 >= group_end)
            .cloned()
            .collect()
    };
    assert_eq!(below(&recovered), below(&cleaned));
    assert_eq!(from(&recovered), from(&before));
    let leftovers: Vec<String> = std::fs::read_dir(&crashed_files)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".swap") || name.ends_with(".deleted"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
