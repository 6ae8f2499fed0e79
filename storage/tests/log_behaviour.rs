//! Behaviour of a partition log through the log manager: appends, reads, recovery,
//! retention. Each test narrates its steps.

mod support;

use karst_storage::batch::BatchHeader;
use karst_storage::{Log, LogConfig, LogError, Offset, TopicPartition};

use support::{append, batch, open, read_all};

#[test]
fn appends_get_consecutive_offsets_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path());
    let partition = TopicPartition::new("orders", 0);
    let log = manager
        .get_or_create(&partition, LogConfig::default())
        .unwrap();
    for round in 0..50 {
        let info = append(&manager, &log, batch(10, 100, 1000 + round)).unwrap();
        assert_eq!(info.base_offset, Offset(round * 10));
        assert_eq!(info.last_offset, Offset(round * 10 + 9));
    }
    assert_eq!(log.offsets().durable_end_offset, Offset(500));
    let batches = read_all(&log, Offset(0));
    assert_eq!(batches.len(), 50);
    assert!(batches
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (i as i64 * 10, 10)));
    // Reading from the middle of a batch starts at that batch.
    assert_eq!(read_all(&log, Offset(255))[0], (250, 10));
    // Past the high watermark is out of range; at it, empty.
    assert!(log.read(Offset(500), 1000, Offset::MAX).unwrap().is_empty());
    assert!(matches!(
        log.read(Offset(501), 1000, Offset::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    manager.shutdown().unwrap();
}

#[test]
fn segments_roll_at_segment_bytes_and_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 16 * 1024,
        ..LogConfig::default()
    };
    let partition = TopicPartition::new("rolls", 2);
    {
        let manager = open(dir.path());
        let log = manager.get_or_create(&partition, config.clone()).unwrap();
        for round in 0..100 {
            append(&manager, &log, batch(5, 200, round)).unwrap();
        }
        assert!(
            log.segment_count() > 5,
            "rolled into {} segments",
            log.segment_count()
        );
        manager.shutdown().unwrap();
    }
    let manager = open(dir.path());
    let log = manager.get(&partition).unwrap();
    assert_eq!(log.offsets().log_end_offset, Offset(500));
    assert_eq!(read_all(&log, Offset(0)).len(), 100);
    assert!(dir
        .path()
        .join("rolls-2/00000000000000000000.index")
        .exists());
}

#[test]
fn a_torn_tail_is_truncated_on_recovery_and_appends_continue_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let partition = TopicPartition::new("torn", 0);
    {
        let manager = open(dir.path());
        let log = manager
            .get_or_create(&partition, LogConfig::default())
            .unwrap();
        for round in 0..3 {
            append(&manager, &log, batch(4, 50, round)).unwrap();
        }
        // No shutdown: simulate a crash, then tear the last batch.
    }
    let segment = dir.path().join("torn-0/00000000000000000000.log");
    let length = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(length - 7).unwrap();
    let manager = open(dir.path());
    let log = manager.get(&partition).unwrap();
    assert_eq!(
        log.offsets().log_end_offset,
        Offset(8),
        "the torn third batch is gone"
    );
    let info = append(&manager, &log, batch(4, 50, 9)).unwrap();
    assert_eq!(info.base_offset, Offset(8));
    assert_eq!(read_all(&log, Offset(0)), vec![(0, 4), (4, 4), (8, 4)]);
}

#[test]
fn a_flipped_bit_in_the_unflushed_tail_is_cut_off_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let partition = TopicPartition::new("flip", 0);
    {
        let manager = open(dir.path());
        let log = manager
            .get_or_create(&partition, LogConfig::default())
            .unwrap();
        for round in 0..3 {
            append(&manager, &log, batch(4, 50, round)).unwrap();
        }
    }
    let segment = dir.path().join("flip-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    std::fs::write(&segment, bytes).unwrap();
    let manager = open(dir.path());
    assert_eq!(
        manager.get(&partition).unwrap().offsets().log_end_offset,
        Offset(8)
    );
}

#[test]
fn retention_by_bytes_deletes_whole_old_segments_and_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path());
    let config = LogConfig {
        segment_bytes: 8 * 1024,
        retention_bytes: 20 * 1024,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let log = manager
        .get_or_create(&TopicPartition::new("sized", 0), config)
        .unwrap();
    for round in 0..100 {
        append(&manager, &log, batch(5, 200, round)).unwrap();
    }
    let before = log.segment_count();
    let deleted = manager.apply_retention(|_| Some(Offset::MAX));
    assert!(deleted > 0 && log.segment_count() == before - deleted);
    let start = log.offsets().log_start_offset;
    assert!(start > Offset(0));
    assert!(log.size_bytes() >= 20 * 1024 - 8 * 1024);
    assert!(matches!(
        log.read(Offset(0), 100, Offset::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, start)[0].0, start.0);
}

#[test]
fn retention_by_time_deletes_segments_whose_records_are_old() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path());
    let config = LogConfig {
        segment_bytes: 4 * 1024,
        retention_ms: 60_000,
        ..LogConfig::default()
    };
    let log = manager
        .get_or_create(&TopicPartition::new("aged", 0), config)
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for round in 0..20 {
        append(&manager, &log, batch(5, 200, now - 86_400_000 + round)).unwrap();
    }
    for round in 0..20 {
        append(&manager, &log, batch(5, 200, now + round)).unwrap();
    }
    manager.apply_retention(|_| Some(Offset::MAX));
    let start = log.offsets().log_start_offset;
    assert!(start >= Offset(90) && start <= Offset(100), "start {start}");
}

#[test]
fn retention_deletes_only_segments_wholly_below_the_high_watermark() {
    // A leader whose followers lag by several segments: its high watermark (the bound the
    // replica manager passes) is far below its log end. Retention by size wants almost
    // everything gone, but may take only segments that end at or below the bound.
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path());
    let config = LogConfig {
        segment_bytes: 4 * 1024,
        retention_bytes: 0,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let partition = TopicPartition::new("lagging", 0);
    let log = manager.get_or_create(&partition, config).unwrap();
    for round in 0..60 {
        append(&manager, &log, batch(5, 200, round)).unwrap();
    }
    let segments_before = log.segment_count();
    let high_watermark = Offset(123);
    assert!(log.offsets().log_end_offset > Offset(250));
    // 1. Bounded by the high watermark: the segment holding offset 122 stays.
    let deleted = manager.apply_retention(|key| (key == &partition).then_some(high_watermark));
    let start = log.offsets().log_start_offset;
    assert!(deleted > 0, "segments wholly below the high watermark go");
    assert!(start <= high_watermark, "log start {start} passed the HW");
    let kept = read_all(&log, start);
    assert!(
        kept.iter()
            .any(|(base, count)| *base < 123 && base + i64::from(*count) >= 123),
        "the batch holding the last committed offsets stays readable: {kept:?}"
    );
    assert!(log.segment_count() > segments_before / 2);
    // 2. Once the high watermark reaches the log end, the rest may go (the active segment
    //    always stays).
    let end = log.offsets().log_end_offset;
    manager.apply_retention(|_| Some(end));
    assert!(log.offsets().log_start_offset > high_watermark);
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn expired_records_above_the_high_watermark_are_kept_and_the_active_segment_not_rolled() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path());
    let config = LogConfig {
        segment_bytes: 4 * 1024,
        retention_ms: 60_000,
        ..LogConfig::default()
    };
    let log = manager
        .get_or_create(&TopicPartition::new("expired", 0), config)
        .unwrap();
    for round in 0..30 {
        append(&manager, &log, batch(5, 200, round)).unwrap();
    }
    let segments = log.segment_count();
    // Every record is decades old, but nothing is replicated yet (high watermark 0).
    assert_eq!(manager.apply_retention(|_| Some(Offset(0))), 0);
    assert_eq!(
        log.segment_count(),
        segments,
        "no roll for a segment that cannot go"
    );
    assert_eq!(log.offsets().log_start_offset, Offset(0));
    // Replicated up to the end: all of it goes, the active segment rolled first.
    let end = log.offsets().log_end_offset;
    assert_eq!(manager.apply_retention(|_| Some(end)), segments);
    assert_eq!(log.offsets().log_start_offset, end);
}

#[test]
fn timestamps_find_the_first_batch_at_or_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path());
    let log = manager
        .get_or_create(&TopicPartition::new("times", 0), LogConfig::default())
        .unwrap();
    for round in 0..10 {
        append(&manager, &log, batch(10, 10, 1000 * round)).unwrap();
    }
    let found = log.batch_for_timestamp(3005, Offset::MAX).unwrap().unwrap();
    assert_eq!(BatchHeader::parse(&found).unwrap().base_offset, Offset(30));
    let found = log.batch_for_timestamp(3010, Offset::MAX).unwrap().unwrap();
    assert_eq!(BatchHeader::parse(&found).unwrap().base_offset, Offset(40));
    assert!(log
        .batch_for_timestamp(99_999, Offset::MAX)
        .unwrap()
        .is_none());
    let max = log.batch_with_max_timestamp(Offset::MAX).unwrap().unwrap();
    assert_eq!(BatchHeader::parse(&max).unwrap().base_offset, Offset(90));
}

#[test]
fn truncation_removes_whole_batches_from_the_offset_on_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path());
    let config = LogConfig {
        segment_bytes: 4 * 1024,
        ..LogConfig::default()
    };
    let log = manager
        .get_or_create(&TopicPartition::new("cut", 0), config)
        .unwrap();
    for round in 0..40 {
        append(&manager, &log, batch(5, 100, round)).unwrap();
    }
    let segments_before = log.segment_count();
    // Offset 102 is inside the batch 100..=104: that batch goes whole.
    log.truncate_to(Offset(102)).unwrap();
    assert_eq!(log.offsets().log_end_offset, Offset(100));
    assert_eq!(log.offsets().durable_end_offset, Offset(100));
    assert!(log.segment_count() < segments_before);
    let info = append(&manager, &log, batch(5, 100, 99)).unwrap();
    assert_eq!(info.base_offset, Offset(100));
    let batches = read_all(&log, Offset(0));
    assert_eq!(batches.len(), 21);
    assert!(batches.iter().enumerate().all(|(i, b)| b.0 == i as i64 * 5));
}

#[test]
fn delete_records_moves_the_log_start_and_drops_whole_segments_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path());
    let config = LogConfig {
        segment_bytes: 4 * 1024,
        ..LogConfig::default()
    };
    let log = manager
        .get_or_create(&TopicPartition::new("purge", 0), config)
        .unwrap();
    for round in 0..40 {
        append(&manager, &log, batch(5, 100, round)).unwrap();
    }
    let before = log.segment_count();
    assert_eq!(log.delete_records_before(Offset(123)).unwrap(), Offset(123));
    assert!(log.segment_count() < before);
    assert!(matches!(
        log.read(Offset(122), 100, Offset::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Reading at the new start returns the batch holding it.
    let first = log.read(Offset(123), 100, Offset::MAX).unwrap();
    assert_eq!(BatchHeader::parse(&first).unwrap().base_offset, Offset(120));
    assert!(matches!(
        log.delete_records_before(Offset(201)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    manager.checkpoint().unwrap();
    drop(log);
    manager.shutdown().unwrap();
    let reopened = open(dir.path());
    let log = reopened.get(&TopicPartition::new("purge", 0)).unwrap();
    assert_eq!(log.offsets().log_start_offset, Offset(123));
}

#[test]
fn a_bit_flip_in_a_sealed_segment_is_never_served_and_takes_the_log_offline() {
    let dir = tempfile::tempdir().unwrap();
    let partition = TopicPartition::new("rot", 0);
    let config = LogConfig {
        segment_bytes: 4 * 1024,
        ..LogConfig::default()
    };
    {
        let manager = open(dir.path());
        let log = manager.get_or_create(&partition, config.clone()).unwrap();
        for round in 0..40 {
            append(&manager, &log, batch(5, 100, round)).unwrap();
        }
        manager.shutdown().unwrap();
    }
    // Flip one bit in the middle of the first (sealed) segment.
    let segment = dir.path().join("rot-0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    std::fs::write(&segment, bytes).unwrap();
    let manager = open(dir.path());
    let log = manager.get(&partition).unwrap();
    let outcome = read_all_checked(&log);
    assert!(
        matches!(outcome, Err(LogError::Corrupt { .. })),
        "{outcome:?}"
    );
    assert!(log.offline_reason().unwrap().contains("CRC mismatch"));
}

fn read_all_checked(log: &Log) -> Result<usize, LogError> {
    let mut offset = Offset(0);
    let mut batches = 0;
    loop {
        let bytes = log.read(offset, 64 * 1024, Offset::MAX)?;
        if bytes.is_empty() {
            return Ok(batches);
        }
        let mut position = 0;
        while let Some(header) = BatchHeader::parse(&bytes[position..]) {
            offset = header.next_offset();
            position += header.size_bytes;
            batches += 1;
        }
    }
}
