//! The commit budget: a bound on the bytes queued for the storage threads (appended but not
//! yet written and synced, see [`crate::committer`]).
//!
//! Every append carries a [`CommitPermit`] for its bytes, taken before it is queued and
//! released once its completion has run (after the group's sync). Callers that can wait
//! take it with [`CommitBudget::acquire`], which waits — without blocking a thread — until
//! enough earlier appends are synced. The broker takes it for a Produce request before it
//! reads the request's body, so a client that floods acks=0 produces (which release their
//! request-bytes budget at once) or whose produces time out (which release it at the
//! timeout) finds its connection stalled, instead of growing this queue without bound.
//!
//! The semaphore is tokio's: fair (first come, first served), so a flood cannot starve a
//! slower acks=all producer that asks for permits between two of its requests.

use std::fmt;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Default of `log.commit.queue.max.bytes`: four full groups ([`crate::committer::GROUP_BYTES_MAX`]),
/// so each of two storage threads can sync one group while the next one fills, and half of
/// the broker's default `queued.max.request.bytes`, so produce requests waiting for their
/// acknowledgement still find request bytes when acks=0 traffic has filled this budget.
pub const COMMIT_QUEUE_BYTES_MAX_DEFAULT: usize = 256 * 1024 * 1024;

/// Bytes queued for commit, across every log of one log manager, at most
/// `log.commit.queue.max.bytes`.
#[derive(Clone)]
pub struct CommitBudget {
    semaphore: Arc<Semaphore>,
    bytes_max: usize,
}

/// Permission to queue bytes for commit; they count against the budget until the last clone
/// of the permit is dropped (one produce request shares its permit among its partitions).
#[derive(Clone)]
pub struct CommitPermit {
    /// `None` for an append exempt from the budget (see [`CommitPermit::unbudgeted`]).
    permit: Option<Arc<OwnedSemaphorePermit>>,
}

impl CommitBudget {
    /// A budget of `bytes_max` bytes (at least 1).
    pub fn new(bytes_max: usize) -> CommitBudget {
        let bytes_max = bytes_max.clamp(1, Semaphore::MAX_PERMITS);
        CommitBudget {
            semaphore: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
        }
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Bytes held by permits now.
    pub fn queued_bytes(&self) -> usize {
        self.bytes_max - self.semaphore.available_permits()
    }

    /// Waits until `bytes` may be queued. A request larger than the whole budget takes all
    /// of it (so it waits for an empty queue rather than forever).
    pub async fn acquire(&self, bytes: usize) -> CommitPermit {
        let permit = Arc::clone(&self.semaphore)
            .acquire_many_owned(self.permits_for(bytes))
            .await
            .expect("the commit budget's semaphore is never closed");
        CommitPermit {
            permit: Some(Arc::new(permit)),
        }
    }

    /// The permit for `bytes` if the budget has room now; for callers that cannot wait.
    pub fn try_acquire(&self, bytes: usize) -> Option<CommitPermit> {
        match Arc::clone(&self.semaphore).try_acquire_many_owned(self.permits_for(bytes)) {
            Ok(permit) => Some(CommitPermit {
                permit: Some(Arc::new(permit)),
            }),
            Err(TryAcquireError::NoPermits) => None,
            Err(TryAcquireError::Closed) => unreachable!("the semaphore is never closed"),
        }
    }

    fn permits_for(&self, bytes: usize) -> u32 {
        bytes.clamp(1, self.bytes_max).min(u32::MAX as usize) as u32
    }
}

impl CommitPermit {
    /// A permit outside the budget, for appends bounded by their own protocol: the group
    /// coordinator's records, each written for a request that holds its request bytes
    /// until the record is replicated (so `queued.max.request.bytes` bounds them).
    pub fn unbudgeted() -> CommitPermit {
        CommitPermit { permit: None }
    }

    /// Bytes this permit holds (0 when unbudgeted).
    pub fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, |permit| permit.num_permits())
    }
}

impl fmt::Debug for CommitPermit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CommitPermit")
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl fmt::Debug for CommitBudget {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CommitBudget")
            .field("queued_bytes", &self.queued_bytes())
            .field("bytes_max", &self.bytes_max)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permit_holds_its_bytes_until_its_last_clone_is_dropped() {
        let budget = CommitBudget::new(100);
        let permit = budget.try_acquire(60).unwrap();
        let shared = permit.clone();
        assert_eq!(budget.queued_bytes(), 60);
        assert!(budget.try_acquire(41).is_none());
        drop(permit);
        assert_eq!(budget.queued_bytes(), 60);
        drop(shared);
        assert_eq!(budget.queued_bytes(), 0);
    }

    #[test]
    fn a_request_larger_than_the_budget_takes_all_of_it() {
        let budget = CommitBudget::new(100);
        let permit = budget.try_acquire(1_000).unwrap();
        assert_eq!(permit.bytes(), 100);
        assert!(budget.try_acquire(1).is_none());
        assert_eq!(CommitPermit::unbudgeted().bytes(), 0);
    }
}
