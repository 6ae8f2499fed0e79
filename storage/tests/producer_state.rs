//! Idempotent producers through the log manager: a replayed batch is stored once and
//! answered with its original offsets; the producer state survives a crash (rebuilt from
//! the log, with and without snapshots), a clean restart, and truncation.

mod support;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use karst_storage::{
    Log, LogConfig, LogError, LogManager, Offset, ProducerEpoch, ProducerError, ProducerId,
    TopicPartition,
};

use support::{append, batch_filled, open, open_with, read_all};

const PRODUCER: i64 = 4242;

/// A batch of `count` records from `PRODUCER` at `epoch`, first sequence `sequence`,
/// stamped now (producer expiry is measured from batch timestamps).
fn idempotent(count: usize, epoch: i16, sequence: i32) -> Bytes {
    idempotent_at(count, epoch, sequence, now_ms())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Like [`idempotent`], with record timestamps from `timestamp_ms`.
fn idempotent_at(count: usize, epoch: i16, sequence: i32, timestamp_ms: i64) -> Bytes {
    let mut bytes = batch_filled(count, 20, timestamp_ms, sequence as u8).to_vec();
    bytes[43..51].copy_from_slice(&PRODUCER.to_be_bytes());
    bytes[51..53].copy_from_slice(&epoch.to_be_bytes());
    bytes[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(bytes)
}

fn open_log(manager: &LogManager, config: LogConfig) -> Arc<Log> {
    manager
        .get_or_create(&TopicPartition::new("idempotent", 0), config)
        .unwrap()
}

/// Appends 20 batches of 3 records (sequences 0, 3, 6, ...) at epoch 0.
fn append_twenty_batches(manager: &LogManager, log: &Arc<Log>) {
    for index in 0..20 {
        let info = append(manager, log, idempotent(3, 0, index * 3)).unwrap();
        assert_eq!(info.base_offset, Offset(i64::from(index) * 3));
    }
}

/// Replays each of the last five batches and checks that each is answered with its
/// original offsets and that the log did not grow; then the next sequence appends.
fn assert_replays_detected(manager: &LogManager, log: &Arc<Log>) {
    let end = log.offsets().log_end_offset;
    for index in 15..20 {
        let info = append(manager, log, idempotent(3, 0, index * 3)).unwrap();
        assert_eq!(
            info.base_offset,
            Offset(i64::from(index) * 3),
            "batch {index}"
        );
        assert_eq!(info.last_offset, Offset(i64::from(index) * 3 + 2));
    }
    assert_eq!(log.offsets().log_end_offset, end, "nothing was written");
    let gap = append(manager, log, idempotent(1, 0, 61)).unwrap_err();
    assert!(matches!(
        gap,
        LogError::Producer(ProducerError::OutOfOrderSequence { expected: 60, .. })
    ));
    let next = append(manager, log, idempotent(1, 0, 60)).unwrap();
    assert_eq!(next.base_offset, end);
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("idempotent-0"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".snapshot"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_replayed_batch_is_stored_once_and_gets_its_original_offsets() {
    let dir = support::scratch_dir();
    let manager = open(dir.path());
    let log = open_log(&manager, LogConfig::default());
    let first = append(&manager, &log, idempotent(3, 0, 0)).unwrap();
    let second = append(&manager, &log, idempotent(2, 0, 3)).unwrap();
    let replay = append(&manager, &log, idempotent(3, 0, 0)).unwrap();
    assert_eq!(
        (replay.base_offset, replay.last_offset),
        (first.base_offset, first.last_offset)
    );
    let replay = append(&manager, &log, idempotent(2, 0, 3)).unwrap();
    assert_eq!(replay.base_offset, second.base_offset);
    assert_eq!(read_all(&log, Offset(0)), vec![(0, 3), (3, 2)]);
    let entries = log.producer_entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, ProducerId(PRODUCER));
    assert_eq!(entries[0].1.last_sequence(), Some(4));
    manager.shutdown().unwrap();
}

#[test]
fn a_refused_batch_fails_only_its_own_request_and_writes_nothing() {
    let dir = support::scratch_dir();
    let manager = open(dir.path());
    let log = open_log(&manager, LogConfig::default());
    append(&manager, &log, idempotent(1, 1, 0)).unwrap();
    let fenced = append(&manager, &log, idempotent(1, 0, 1)).unwrap_err();
    assert!(matches!(
        fenced,
        LogError::Producer(ProducerError::InvalidProducerEpoch {
            current: ProducerEpoch(1),
            ..
        })
    ));
    // A batch without a producer id is never checked.
    let plain = append(&manager, &log, support::batch(2, 10, 5)).unwrap();
    assert_eq!(plain.base_offset, Offset(1));
    assert!(log.offline_reason().is_none());
    assert_eq!(read_all(&log, Offset(0)), vec![(0, 1), (1, 2)]);
}

#[test]
fn producer_state_survives_a_crash_without_a_snapshot() {
    let dir = support::scratch_dir();
    {
        let manager = open(dir.path());
        let log = open_log(&manager, LogConfig::default());
        append_twenty_batches(&manager, &log);
        // No shutdown: a crash. One segment, so no snapshot was ever written.
    }
    assert!(snapshot_files(dir.path()).is_empty());
    let manager = open(dir.path());
    let log = open_log(&manager, LogConfig::default());
    assert_replays_detected(&manager, &log);
}

#[test]
fn producer_state_survives_a_crash_from_the_latest_snapshot_and_the_batches_after_it() {
    let dir = support::scratch_dir();
    let config = LogConfig {
        segment_bytes: 512,
        ..LogConfig::default()
    };
    {
        let manager = open_with(
            dir.path(),
            Arc::new(karst_storage::PortableBackend),
            &config,
        );
        let log = open_log(&manager, config.clone());
        append_twenty_batches(&manager, &log);
        assert!(log.segment_count() > 3, "small segments roll");
    }
    let snapshots = snapshot_files(dir.path());
    assert!(snapshots.len() >= 3, "a snapshot per roll: {snapshots:?}");
    // Delete every snapshot but the newest: recovery must not need them.
    for name in &snapshots[..snapshots.len() - 1] {
        std::fs::remove_file(dir.path().join("idempotent-0").join(name)).unwrap();
    }
    let manager = open_with(
        dir.path(),
        Arc::new(karst_storage::PortableBackend),
        &config,
    );
    let log = open_log(&manager, config);
    assert_replays_detected(&manager, &log);
}

#[test]
fn a_clean_shutdown_writes_a_snapshot_at_the_log_end() {
    let dir = support::scratch_dir();
    {
        let manager = open(dir.path());
        let log = open_log(&manager, LogConfig::default());
        append_twenty_batches(&manager, &log);
        manager.shutdown().unwrap();
    }
    assert_eq!(
        snapshot_files(dir.path()),
        vec![format!("{:020}.snapshot", 60)]
    );
    let manager = open(dir.path());
    let log = open_log(&manager, LogConfig::default());
    assert_replays_detected(&manager, &log);
}

#[test]
fn a_damaged_snapshot_falls_back_to_scanning_the_log_and_leftovers_are_removed() {
    let dir = support::scratch_dir();
    {
        let manager = open(dir.path());
        let log = open_log(&manager, LogConfig::default());
        append_twenty_batches(&manager, &log);
        manager.shutdown().unwrap();
    }
    let snapshot = dir
        .path()
        .join("idempotent-0")
        .join(format!("{:020}.snapshot", 60));
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&snapshot, bytes).unwrap();
    // A snapshot write a crash interrupted left its temporary file behind.
    let temporary = snapshot.with_extension("snapshot.tmp");
    std::fs::write(&temporary, b"half a snap").unwrap();
    let manager = open(dir.path());
    let log = open_log(&manager, LogConfig::default());
    assert!(!temporary.exists());
    assert_replays_detected(&manager, &log);
}

#[test]
fn truncation_forgets_the_batches_it_removes_and_drops_later_snapshots() {
    let dir = support::scratch_dir();
    let config = LogConfig {
        segment_bytes: 512,
        ..LogConfig::default()
    };
    let manager = open_with(
        dir.path(),
        Arc::new(karst_storage::PortableBackend),
        &config,
    );
    let log = open_log(&manager, config);
    append_twenty_batches(&manager, &log);
    // Cut the log after batch 9 (offsets 0..30).
    manager.truncate_to(&log, Offset(30)).unwrap();
    assert_eq!(log.offsets().log_end_offset, Offset(30));
    assert!(snapshot_files(dir.path())
        .iter()
        .all(|name| name[..20].parse::<i64>().unwrap() <= 30));
    let entry = &log.producer_entries()[0].1;
    assert_eq!(entry.last_sequence(), Some(29));
    // Batch 9 is still a duplicate; batch 10 is new again and gets offset 30.
    let replay = append(&manager, &log, idempotent(3, 0, 27)).unwrap();
    assert_eq!(replay.base_offset, Offset(27));
    let again = append(&manager, &log, idempotent(3, 0, 30)).unwrap();
    assert_eq!(again.base_offset, Offset(30));
}

#[test]
fn idle_producers_expire_after_the_expiration_time() {
    let dir = support::scratch_dir();
    const MINUTE_MS: i64 = 60_000;
    let config = LogConfig {
        producer_id_expiration_ms: 5 * MINUTE_MS,
        ..LogConfig::default()
    };
    let manager = open_with(
        dir.path(),
        Arc::new(karst_storage::PortableBackend),
        &config,
    );
    let log = open_log(&manager, config);
    // A producer last seen ten minutes ago, by its batch timestamp.
    append(
        &manager,
        &log,
        idempotent_at(1, 0, 0, now_ms() - 10 * MINUTE_MS),
    )
    .unwrap();
    assert_eq!(manager.remove_expired_producers(), 1);
    assert!(log.producer_entries().is_empty());
    // An expired producer is unknown: any sequence is accepted (KIP-360).
    let info = append(&manager, &log, idempotent(1, 0, 9)).unwrap();
    assert_eq!(info.base_offset, Offset(1));
}

/// Queues an append without waiting; the receiver yields its outcome.
fn submit(
    manager: &LogManager,
    log: &Arc<Log>,
    bytes: Bytes,
) -> std::sync::mpsc::Receiver<Result<karst_storage::AppendInfo, LogError>> {
    let batches = karst_storage::validate_produced(&bytes, 1 << 24).unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let queued_bytes: usize = batches.iter().map(|batch| batch.bytes.len()).sum();
    manager.append(
        Arc::clone(log),
        batches,
        karst_storage::AppendOrigin::Leader(karst_storage::LeaderEpoch(0)),
        manager
            .commit_budget()
            .try_acquire(queued_bytes)
            .expect("room in the commit budget"),
        Box::new(move |outcome| sender.send(outcome).unwrap()),
    );
    receiver
}

#[test]
fn pipelined_appends_are_judged_in_order_and_a_refusal_spares_its_neighbours() {
    let dir = support::scratch_dir();
    let manager = open(dir.path());
    let log = open_log(&manager, LogConfig::default());
    // Queued back to back, so several share a group: the original, its retry before the
    // original is even synced, a gap, and the next batch in sequence.
    let pending = [
        submit(&manager, &log, idempotent(2, 0, 0)),
        submit(&manager, &log, idempotent(2, 0, 0)),
        submit(&manager, &log, idempotent(1, 0, 9)),
        submit(&manager, &log, idempotent(1, 0, 2)),
    ];
    let outcomes: Vec<_> = pending
        .into_iter()
        .map(|receiver| receiver.recv().unwrap())
        .collect();
    assert_eq!(outcomes[0].as_ref().unwrap().base_offset, Offset(0));
    assert_eq!(
        outcomes[1].as_ref().unwrap().base_offset,
        Offset(0),
        "the retry"
    );
    assert!(matches!(
        outcomes[2],
        Err(LogError::Producer(ProducerError::OutOfOrderSequence { .. }))
    ));
    assert_eq!(outcomes[3].as_ref().unwrap().base_offset, Offset(2));
    assert_eq!(read_all(&log, Offset(0)), vec![(0, 2), (2, 1)]);
}

#[test]
fn a_retry_on_a_log_append_time_topic_gets_the_original_append_time() {
    let dir = support::scratch_dir();
    let config = LogConfig {
        log_append_time: true,
        ..LogConfig::default()
    };
    let manager = open_with(
        dir.path(),
        Arc::new(karst_storage::PortableBackend),
        &config,
    );
    let log = open_log(&manager, config);
    let original = append(&manager, &log, idempotent(2, 0, 0)).unwrap();
    assert!(original.log_append_time_ms > 0);
    let retry = append(&manager, &log, idempotent(2, 0, 0)).unwrap();
    assert_eq!(retry, original);
}
