//! Producer state of one partition log: for each idempotent producer id, its epoch and the
//! sequence ranges and offsets of its newest batches. This is what lets a retried batch be
//! recognised and acknowledged with its original offsets instead of being written twice.
//!
//! The state lives inside the log's state lock ([`crate::log`]) and is checked and updated
//! in the same critical section that assigns offsets (`Log::plan`), so a check and the
//! append it allows cannot be separated by another append. Kafka's rules, for batches
//! produced by clients:
//!
//! * a batch without a producer id (-1) is not checked;
//! * a batch whose epoch and first and last sequence equal one of the producer's newest
//!   [`BATCHES_RETAINED`] batches is a duplicate: it is not written again, and the producer
//!   is told the original offsets;
//! * an epoch older than the producer's current one is INVALID_PRODUCER_EPOCH (fenced);
//! * a newer epoch must start at sequence 0;
//! * in the same epoch the first sequence must follow the last one (wrapping from
//!   `i32::MAX` to 0), else OUT_OF_ORDER_SEQUENCE_NUMBER;
//! * a producer id without state (never seen, or expired after `producer.id.expiration.ms`)
//!   is accepted at any sequence, as Kafka has done since KIP-360: the client resets its
//!   sequences itself.
//!
//! Replicated batches (a follower appending the leader's batches) and batches read back
//! during recovery are not checked; they update the state through
//! [`ProducerStateManager::update_from_batch`].
//!
//! Durability: the state is derived from the log. On open it is rebuilt from the newest
//! snapshot file (`<20-digit offset>.snapshot`, written at every segment roll and on a
//! clean close; see [`snapshot`]) plus a scan of the batch headers after it. A truncation
//! drops the snapshots above the new end and rebuilds the same way.

pub(crate) mod recovery;
pub mod snapshot;

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;
use crate::types::{Offset, ProducerEpoch, ProducerId};

/// How many of a producer's newest batches are remembered for duplicate detection: Kafka
/// producers with idempotence keep at most 5 requests in flight per connection, so a retry
/// is always of one of the last 5 batches.
pub const BATCHES_RETAINED: usize = 5;

/// One appended batch of a producer, as remembered for duplicate detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The batch's max timestamp (the broker's time for LogAppendTime topics).
    pub max_timestamp_ms: i64,
}

/// What a partition knows about one producer id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: ProducerEpoch,
    /// Newest last, at most [`BATCHES_RETAINED`], all of `epoch`.
    pub batches: VecDeque<BatchRecord>,
    /// Max timestamp of the newest batch: what expiry is measured from.
    pub last_timestamp_ms: i64,
    /// First offset of the producer's open transaction; always `None` until transactions
    /// exist, kept so snapshots and DescribeProducers already have the field.
    pub current_txn_first_offset: Option<Offset>,
}

impl ProducerEntry {
    fn new(epoch: ProducerEpoch) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_RETAINED),
            last_timestamp_ms: -1,
            current_txn_first_offset: None,
        }
    }

    /// Sequence of the newest record, if a batch of the current epoch is remembered.
    pub fn last_sequence(&self) -> Option<i32> {
        self.batches.back().map(|batch| batch.last_sequence)
    }

    /// The remembered batch `batch` repeats, if any.
    fn duplicate_of(&self, batch: &ProducerBatch) -> Option<BatchRecord> {
        if batch.epoch != self.epoch {
            return None;
        }
        self.batches.iter().copied().find(|remembered| {
            remembered.first_sequence == batch.first_sequence
                && remembered.last_sequence == batch.last_sequence
        })
    }

    /// Remembers `batch`; a new epoch forgets the batches of the old one.
    fn add(&mut self, batch: &ProducerBatch) {
        if batch.epoch != self.epoch {
            self.epoch = batch.epoch;
            self.batches.clear();
        }
        if self.batches.len() == BATCHES_RETAINED {
            self.batches.pop_front();
        }
        self.batches.push_back(BatchRecord {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence,
            base_offset: batch.base_offset,
            last_offset: batch.last_offset,
            max_timestamp_ms: batch.max_timestamp_ms,
        });
        self.last_timestamp_ms = batch.max_timestamp_ms;
    }
}

/// The producer fields of one batch header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: ProducerId,
    pub epoch: ProducerEpoch,
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub max_timestamp_ms: i64,
}

impl ProducerBatch {
    /// The producer fields of `header`, or `None` for a batch without a producer id (or a
    /// control batch: transaction markers arrive with transactions).
    pub fn from_header(header: &BatchHeader) -> Option<ProducerBatch> {
        if header.producer_id < 0 || header.is_control() {
            return None;
        }
        Some(ProducerBatch {
            producer_id: ProducerId(header.producer_id),
            epoch: ProducerEpoch(header.producer_epoch),
            first_sequence: header.base_sequence,
            last_sequence: sequence_after(header.base_sequence, header.last_offset_delta),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp_ms: header.max_timestamp,
        })
    }
}

/// The sequence `delta` records after `sequence`: sequences wrap from `i32::MAX` to 0.
pub fn sequence_after(sequence: i32, delta: i32) -> i32 {
    let next = i64::from(sequence) + i64::from(delta.max(0));
    (next % (i64::from(i32::MAX) + 1)) as i32
}

/// True when `next` is the sequence right after `last`.
fn in_sequence(last: i32, next: i32) -> bool {
    sequence_after(last, 1) == next
}

/// Why a produced batch was refused; mapped to Kafka error codes by the broker.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// OUT_OF_ORDER_SEQUENCE_NUMBER: a gap (or a retry too old to be recognised), or a new
    /// epoch that does not start at 0.
    #[error("out of order sequence number for producer {producer_id} (epoch {epoch}): got {received}, expected {expected}")]
    OutOfOrderSequence {
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        received: i32,
        expected: i32,
    },
    /// INVALID_PRODUCER_EPOCH: an older instance of the producer, fenced by a newer epoch.
    #[error(
        "producer {producer_id} sent epoch {received}, older than its current epoch {current}"
    )]
    InvalidProducerEpoch {
        producer_id: ProducerId,
        received: ProducerEpoch,
        current: ProducerEpoch,
    },
}

/// The verdict on one batch of a client's produce request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it (a batch without a producer id, or the next one in sequence).
    Append,
    /// Already in the log: answer with these offsets, write nothing.
    Duplicate(BatchRecord),
}

/// Per-producer state of one partition log. Owned by the log and changed only under its
/// lock.
#[derive(Debug)]
pub struct ProducerStateManager {
    producers: HashMap<ProducerId, ProducerEntry>,
    /// Entries as they were before the current append group changed them, to restore when
    /// the group's write is undone (`Log::rollback`). `None` outside a group.
    undo: Option<HashMap<ProducerId, Option<ProducerEntry>>>,
}

impl Default for ProducerStateManager {
    fn default() -> Self {
        ProducerStateManager::new()
    }
}

impl ProducerStateManager {
    pub fn new() -> ProducerStateManager {
        ProducerStateManager {
            producers: HashMap::new(),
            undo: None,
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn entry(&self, producer_id: ProducerId) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer with state, in producer id order (for DescribeProducers).
    pub fn entries(&self) -> Vec<(ProducerId, ProducerEntry)> {
        let mut entries: Vec<(ProducerId, ProducerEntry)> = self
            .producers
            .iter()
            .map(|(id, entry)| (*id, entry.clone()))
            .collect();
        entries.sort_by_key(|(id, _)| *id);
        entries
    }

    /// Checks the batches of one client produce request, in order, without changing
    /// anything: each later batch is checked against the state the earlier ones would leave.
    /// Any refusal refuses the whole request (nothing of it may be written).
    pub fn check_client_batches<'a>(
        &self,
        headers: impl IntoIterator<Item = &'a BatchHeader>,
    ) -> Result<Vec<Verdict>, ProducerError> {
        let mut pending: HashMap<ProducerId, ProducerEntry> = HashMap::new();
        let mut verdicts = Vec::new();
        for header in headers {
            let Some(batch) = ProducerBatch::from_header(header) else {
                verdicts.push(Verdict::Append);
                continue;
            };
            let known = self.producers.get(&batch.producer_id);
            // As Kafka: a retry is recognised against the state before this request.
            if let Some(original) = known.and_then(|entry| entry.duplicate_of(&batch)) {
                verdicts.push(Verdict::Duplicate(original));
                continue;
            }
            let current = pending.get(&batch.producer_id).or(known);
            check_batch(current, &batch)?;
            pending
                .entry(batch.producer_id)
                .or_insert_with(|| known.cloned().unwrap_or(ProducerEntry::new(batch.epoch)))
                .add(&batch);
            verdicts.push(Verdict::Append);
        }
        Ok(verdicts)
    }

    /// Records a batch that is in the log at the offsets in `header`, without checking it:
    /// client batches after [`Self::check_client_batches`] allowed them, and batches a
    /// follower appends with the leader's offsets (the leader checked them) or recovery
    /// reads back. Batches without a producer id are ignored.
    pub fn update_from_batch(&mut self, header: &BatchHeader) {
        let Some(batch) = ProducerBatch::from_header(header) else {
            return;
        };
        if let Some(undo) = &mut self.undo {
            undo.entry(batch.producer_id)
                .or_insert_with(|| self.producers.get(&batch.producer_id).cloned());
        }
        self.producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry::new(batch.epoch))
            .add(&batch);
    }

    /// Starts remembering how to undo the changes of one append group.
    pub(crate) fn begin_group(&mut self) {
        self.undo = Some(HashMap::new());
    }

    /// Restores every entry the current group changed.
    pub(crate) fn undo_group(&mut self) {
        for (producer_id, before) in self.undo.take().unwrap_or_default() {
            match before {
                Some(entry) => self.producers.insert(producer_id, entry),
                None => self.producers.remove(&producer_id),
            };
        }
    }

    /// Forgets producers whose newest batch is `expiration_ms` or more older than `now_ms`
    /// (and that have no open transaction). Returns how many were forgotten.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| {
            entry.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(entry.last_timestamp_ms) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Forgets everything (before a rebuild).
    pub fn clear(&mut self) {
        self.producers.clear();
        self.undo = None;
    }

    pub(crate) fn insert(&mut self, producer_id: ProducerId, entry: ProducerEntry) {
        self.producers.insert(producer_id, entry);
    }
}

/// Kafka's epoch and sequence rules for one client batch against the producer's current
/// entry (`None`: no state for this producer id).
fn check_batch(
    current: Option<&ProducerEntry>,
    batch: &ProducerBatch,
) -> Result<(), ProducerError> {
    let Some(current) = current else {
        // Unknown (or expired) producer: any sequence is accepted (KIP-360).
        return Ok(());
    };
    if batch.epoch < current.epoch {
        return Err(ProducerError::InvalidProducerEpoch {
            producer_id: batch.producer_id,
            received: batch.epoch,
            current: current.epoch,
        });
    }
    if batch.epoch != current.epoch {
        if batch.first_sequence != 0 && current.epoch != ProducerEpoch::NONE {
            return Err(ProducerError::OutOfOrderSequence {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                received: batch.first_sequence,
                expected: 0,
            });
        }
        return Ok(());
    }
    match current.last_sequence() {
        Some(last) if !in_sequence(last, batch.first_sequence) => {
            Err(ProducerError::OutOfOrderSequence {
                producer_id: batch.producer_id,
                epoch: batch.epoch,
                received: batch.first_sequence,
                expected: sequence_after(last, 1),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
