//! Kafka's producer-state rules, one behaviour per test.

use super::*;
use crate::types::LeaderEpoch;

const PRODUCER: ProducerId = ProducerId(1000);

/// The header of a batch of `records` records from `PRODUCER` at `epoch`, starting at
/// sequence `sequence`, stored at `base_offset`.
fn header(epoch: i16, sequence: i32, records: i32, base_offset: i64) -> BatchHeader {
    BatchHeader {
        base_offset: Offset(base_offset),
        size_bytes: 100,
        leader_epoch: LeaderEpoch(0),
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: records - 1,
        base_timestamp: 1_000,
        max_timestamp: 1_000 + i64::from(records),
        producer_id: PRODUCER.0,
        producer_epoch: epoch,
        base_sequence: sequence,
        records_count: records,
    }
}

/// Checks one batch as a client append and, if allowed, records it.
fn produce(
    state: &mut ProducerStateManager,
    header: &BatchHeader,
) -> Result<Verdict, ProducerError> {
    let verdict = state.check_client_batches([header])?.remove(0);
    if verdict == Verdict::Append {
        state.update_from_batch(header);
    }
    Ok(verdict)
}

/// A producer that has appended `batches` batches of 2 records at epoch 0 from offset 0.
fn producer_with_batches(batches: i32) -> ProducerStateManager {
    let mut state = ProducerStateManager::new();
    for index in 0..batches {
        let verdict = produce(&mut state, &header(0, index * 2, 2, i64::from(index) * 2)).unwrap();
        assert_eq!(verdict, Verdict::Append);
    }
    state
}

#[test]
fn a_batch_without_a_producer_id_is_not_checked_or_remembered() {
    let mut state = ProducerStateManager::new();
    let mut plain = header(0, 7, 1, 0);
    plain.producer_id = -1;
    plain.producer_epoch = -1;
    plain.base_sequence = -1;
    assert_eq!(produce(&mut state, &plain), Ok(Verdict::Append));
    assert_eq!(produce(&mut state, &plain), Ok(Verdict::Append));
    assert!(state.is_empty());
}

#[test]
fn a_duplicate_of_each_of_the_last_five_batches_gets_its_original_offsets() {
    let mut state = producer_with_batches(7);
    // Batches 2..=6 are remembered; a retry of any of them is a duplicate.
    for index in 2..7 {
        let retry = header(0, index * 2, 2, 999);
        let expected = BatchRecord {
            first_sequence: index * 2,
            last_sequence: index * 2 + 1,
            base_offset: Offset(i64::from(index) * 2),
            last_offset: Offset(i64::from(index) * 2 + 1),
            max_timestamp_ms: 1_002,
        };
        assert_eq!(
            produce(&mut state, &retry),
            Ok(Verdict::Duplicate(expected))
        );
    }
    // A retry of batch 1 is too old to be recognised: it is out of sequence.
    let too_old = produce(&mut state, &header(0, 2, 2, 999));
    assert!(
        matches!(
            too_old,
            Err(ProducerError::OutOfOrderSequence {
                received: 2,
                expected: 14,
                ..
            })
        ),
        "{too_old:?}"
    );
}

#[test]
fn a_sequence_gap_is_out_of_order() {
    let mut state = producer_with_batches(1);
    let gap = produce(&mut state, &header(0, 3, 1, 2));
    assert_eq!(
        gap,
        Err(ProducerError::OutOfOrderSequence {
            producer_id: PRODUCER,
            epoch: ProducerEpoch(0),
            received: 3,
            expected: 2,
        })
    );
    assert_eq!(
        produce(&mut state, &header(0, 2, 1, 2)),
        Ok(Verdict::Append)
    );
}

#[test]
fn an_older_epoch_is_fenced() {
    let mut state = producer_with_batches(1);
    assert_eq!(
        produce(&mut state, &header(1, 0, 1, 2)),
        Ok(Verdict::Append)
    );
    assert_eq!(
        produce(&mut state, &header(0, 2, 1, 3)),
        Err(ProducerError::InvalidProducerEpoch {
            producer_id: PRODUCER,
            received: ProducerEpoch(0),
            current: ProducerEpoch(1),
        })
    );
}

#[test]
fn a_new_epoch_must_start_at_sequence_zero_and_forgets_the_old_batches() {
    let mut state = producer_with_batches(2);
    let not_zero = produce(&mut state, &header(1, 4, 1, 4));
    assert!(
        matches!(
            not_zero,
            Err(ProducerError::OutOfOrderSequence { expected: 0, .. })
        ),
        "{not_zero:?}"
    );
    assert_eq!(
        produce(&mut state, &header(1, 0, 2, 4)),
        Ok(Verdict::Append)
    );
    let entry = state.entry(PRODUCER).unwrap();
    assert_eq!(entry.epoch, ProducerEpoch(1));
    assert_eq!(entry.batches.len(), 1);
    // The old epoch's batch 0 (sequence 0..=1) is no duplicate of the new epoch's.
    assert!(produce(&mut state, &header(0, 0, 2, 9)).is_err());
}

#[test]
fn an_unknown_producer_is_accepted_at_any_sequence() {
    let mut state = ProducerStateManager::new();
    assert_eq!(
        produce(&mut state, &header(3, 42, 1, 0)),
        Ok(Verdict::Append)
    );
    assert_eq!(
        produce(&mut state, &header(3, 43, 1, 1)),
        Ok(Verdict::Append)
    );
}

#[test]
fn sequences_wrap_from_i32_max_to_zero() {
    assert_eq!(sequence_after(i32::MAX, 1), 0);
    assert_eq!(sequence_after(i32::MAX - 1, 3), 1);
    let mut state = ProducerStateManager::new();
    // A batch of 3 whose sequences are MAX-1, MAX, 0.
    assert_eq!(
        produce(&mut state, &header(0, i32::MAX - 1, 3, 0)),
        Ok(Verdict::Append)
    );
    assert_eq!(state.entry(PRODUCER).unwrap().last_sequence(), Some(0));
    assert_eq!(
        produce(&mut state, &header(0, 1, 1, 3)),
        Ok(Verdict::Append)
    );
    assert!(produce(&mut state, &header(0, 0, 1, 4)).is_err());
}

#[test]
fn batches_of_one_request_are_checked_in_order_against_each_other() {
    let state = producer_with_batches(1);
    let next = header(0, 2, 1, 0);
    let after = header(0, 3, 1, 0);
    assert_eq!(
        state.check_client_batches([&next, &after]),
        Ok(vec![Verdict::Append, Verdict::Append])
    );
    let gap = header(0, 5, 1, 0);
    assert!(state.check_client_batches([&next, &gap]).is_err());
    // Checking changes nothing.
    assert_eq!(state.entry(PRODUCER).unwrap().last_sequence(), Some(1));
}

#[test]
fn producers_idle_for_the_expiration_time_are_forgotten() {
    let mut state = producer_with_batches(1);
    let last = state.entry(PRODUCER).unwrap().last_timestamp_ms;
    assert_eq!(state.remove_expired(last + 999, 1_000), 0);
    assert_eq!(state.remove_expired(last + 1_000, 1_000), 1);
    assert!(state.entry(PRODUCER).is_none());
    // Forgotten, the producer may continue at any sequence.
    assert_eq!(
        produce(&mut state, &header(0, 77, 1, 2)),
        Ok(Verdict::Append)
    );
}

#[test]
fn an_undone_group_restores_the_entries_it_changed() {
    let mut state = producer_with_batches(1);
    let before = state.entry(PRODUCER).cloned();
    state.begin_group();
    produce(&mut state, &header(0, 2, 1, 2)).unwrap();
    let mut other = header(0, 0, 1, 3);
    other.producer_id = 2000;
    produce(&mut state, &other).unwrap();
    state.undo_group();
    assert_eq!(state.entry(PRODUCER).cloned(), before);
    assert!(state.entry(ProducerId(2000)).is_none());
}

#[test]
fn a_snapshot_round_trips_every_remembered_batch() {
    let mut state = producer_with_batches(6);
    let mut other = header(4, 10, 3, 20);
    other.producer_id = 7;
    state.update_from_batch(&other);
    let bytes = snapshot::encode(&state);
    let decoded = snapshot::decode(&bytes).expect("a valid snapshot");
    assert_eq!(decoded, state.entries());
    assert_eq!(decoded[1].1.batches.len(), BATCHES_RETAINED);
}

#[test]
fn a_damaged_snapshot_is_refused() {
    let state = producer_with_batches(2);
    let mut bytes = snapshot::encode(&state);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(snapshot::decode(&bytes).is_none());
    assert!(snapshot::decode(&bytes[..3]).is_none());
    assert!(snapshot::decode(&[]).is_none());
}
