//! Incremental fetch sessions (KIP-227): the broker remembers a consumer's partition set
//! so that later fetches send only changes, and responses carry only partitions with news.
//!
//! Session protocol, keyed by (session id, epoch) in the request:
//! * `(0, -1)`: a full fetch with no session;
//! * `(0, 0)`: a full fetch that opens a session (id in the response, 0 if the cache is full);
//! * `(id, n > 0)`: incremental: `n` must be the next epoch, else INVALID_FETCH_SESSION_EPOCH;
//!   an unknown id is FETCH_SESSION_ID_NOT_FOUND;
//! * `(id, -1)`: close the session, then a full sessionless fetch; `(id, 0)`: close and reopen.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto_kafka::ResponseError;

use crate::error::ApiError;

/// Most partitions one session may track. A client's incremental requests add partitions
/// by name, existing or not: without a bound, one session could grow the broker's memory
/// without limit. 100,000 is above any real consumer's assignment on one broker.
pub const SESSION_PARTITIONS_MAX: usize = 100_000;

/// Sessions idle longer than this are evicted first when the cache is full.
pub const SESSION_IDLE_EVICTION: Duration = Duration::from_secs(120);

/// What a session remembers per partition: the fetch position and what the last response
/// reported, so an incremental response can leave unchanged partitions out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionPartition {
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    /// The leader epoch the client believes current (-1: unknown, not checked).
    pub current_leader_epoch: i32,
    pub last_high_watermark: i64,
    pub last_log_start_offset: i64,
}

pub type PartitionKey = (String, i32);

struct Session {
    next_epoch: i32,
    partitions: BTreeMap<PartitionKey, SessionPartition>,
    last_used: Instant,
}

/// Which session a fetch belongs to, decided before the fetch runs.
pub enum SessionUse {
    /// No session: answer every partition.
    Sessionless,
    /// A new session with this id (0: none could be created); answer every partition.
    New(i32),
    /// An incremental fetch in session `id` over these partitions.
    Incremental(i32, BTreeMap<PartitionKey, SessionPartition>),
}

pub struct FetchSessionCache {
    slots: usize,
    next_id: Mutex<i32>,
    sessions: Mutex<HashMap<i32, Session>>,
}

impl FetchSessionCache {
    pub fn new(slots: usize) -> FetchSessionCache {
        FetchSessionCache {
            slots,
            next_id: Mutex::new(1),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a fetch: validates the session fields and applies the request's partition
    /// changes (`updates` add or modify, `forgotten` remove).
    pub fn begin(
        &self,
        session_id: i32,
        epoch: i32,
        updates: Vec<(PartitionKey, SessionPartition)>,
        forgotten: Vec<PartitionKey>,
        is_replica: bool,
    ) -> Result<SessionUse, ApiError> {
        let mut sessions = self.sessions.lock().expect("sessions lock poisoned");
        if session_id != 0 && epoch <= 0 {
            sessions.remove(&session_id);
        }
        if epoch == -1 || is_replica && epoch <= 0 && session_id == 0 && self.slots == 0 {
            return Ok(SessionUse::Sessionless);
        }
        if epoch == 0 {
            let too_large = updates.len() > SESSION_PARTITIONS_MAX;
            if too_large || sessions.len() >= self.slots && !Self::evict_idle(&mut sessions) {
                return Ok(SessionUse::New(0));
            }
            let id = {
                let mut next = self.next_id.lock().expect("id lock poisoned");
                let id = *next;
                *next = if *next == i32::MAX { 1 } else { *next + 1 };
                id
            };
            sessions.insert(
                id,
                Session {
                    next_epoch: 1,
                    partitions: updates.into_iter().collect(),
                    last_used: Instant::now(),
                },
            );
            return Ok(SessionUse::New(id));
        }
        let session = sessions.get_mut(&session_id).ok_or_else(|| {
            ApiError::new(
                ResponseError::FetchSessionIdNotFound,
                format!("fetch session {session_id} not found"),
            )
        })?;
        if epoch != session.next_epoch {
            return Err(ApiError::new(
                ResponseError::InvalidFetchSessionEpoch,
                format!(
                    "fetch session {session_id} expected epoch {}, got {epoch}",
                    session.next_epoch
                ),
            ));
        }
        session.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
        session.last_used = Instant::now();
        for key in forgotten {
            session.partitions.remove(&key);
        }
        let added = updates
            .iter()
            .filter(|(key, _)| !session.partitions.contains_key(key))
            .count();
        if session.partitions.len() + added > SESSION_PARTITIONS_MAX {
            sessions.remove(&session_id);
            return Err(ApiError::new(
                ResponseError::FetchSessionIdNotFound,
                format!(
                    "fetch session {session_id} would track more than {SESSION_PARTITIONS_MAX} partitions"
                ),
            ));
        }
        for (key, update) in updates {
            let entry = session.partitions.entry(key).or_default();
            entry.fetch_offset = update.fetch_offset;
            entry.partition_max_bytes = update.partition_max_bytes;
            entry.current_leader_epoch = update.current_leader_epoch;
        }
        Ok(SessionUse::Incremental(
            session_id,
            session.partitions.clone(),
        ))
    }

    /// Records what a response reported, for the next incremental fetch.
    pub fn record(&self, session_id: i32, reported: &[(PartitionKey, i64, i64)]) {
        let mut sessions = self.sessions.lock().expect("sessions lock poisoned");
        if let Some(session) = sessions.get_mut(&session_id) {
            for (key, high_watermark, log_start_offset) in reported {
                if let Some(partition) = session.partitions.get_mut(key) {
                    partition.last_high_watermark = *high_watermark;
                    partition.last_log_start_offset = *log_start_offset;
                }
            }
        }
    }

    fn evict_idle(sessions: &mut HashMap<i32, Session>) -> bool {
        let oldest = sessions
            .iter()
            .filter(|(_, s)| s.last_used.elapsed() > SESSION_IDLE_EVICTION)
            .min_by_key(|(_, s)| s.last_used)
            .map(|(id, _)| *id);
        oldest.map(|id| sessions.remove(&id)).is_some()
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().expect("sessions lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(offset: i64) -> SessionPartition {
        SessionPartition {
            fetch_offset: offset,
            partition_max_bytes: 1024,
            ..SessionPartition::default()
        }
    }

    #[test]
    fn a_session_cannot_grow_past_its_partition_limit() {
        let cache = FetchSessionCache::new(10);
        let SessionUse::New(id) = cache
            .begin(
                0,
                0,
                vec![(("t".to_owned(), 0), partition(0))],
                vec![],
                false,
            )
            .unwrap()
        else {
            panic!("expected a new session");
        };
        let flood: Vec<(PartitionKey, SessionPartition)> = (1..=SESSION_PARTITIONS_MAX as i32)
            .map(|index| (("t".to_owned(), index), partition(0)))
            .collect();
        let error = cache.begin(id, 1, flood, vec![], false).err().unwrap();
        assert_eq!(error.code, ResponseError::FetchSessionIdNotFound);
        // The session is gone (the client starts a new, full one): its next epoch is unknown.
        let gone = cache.begin(id, 2, vec![], vec![], false).err().unwrap();
        assert_eq!(gone.code, ResponseError::FetchSessionIdNotFound);
    }

    #[test]
    fn a_session_opens_then_accepts_the_next_epoch_only() {
        let cache = FetchSessionCache::new(10);
        let key = ("t".to_owned(), 0);
        let SessionUse::New(id) = cache
            .begin(0, 0, vec![(key.clone(), partition(0))], vec![], false)
            .unwrap()
        else {
            panic!("expected a new session");
        };
        assert!(id > 0);
        let SessionUse::Incremental(_, partitions) =
            cache.begin(id, 1, vec![], vec![], false).unwrap()
        else {
            panic!("expected incremental");
        };
        assert_eq!(partitions[&key].fetch_offset, 0);
        let error = cache.begin(id, 1, vec![], vec![], false).err().unwrap();
        assert_eq!(error.code, ResponseError::InvalidFetchSessionEpoch);
        let error = cache.begin(999, 1, vec![], vec![], false).err().unwrap();
        assert_eq!(error.code, ResponseError::FetchSessionIdNotFound);
    }

    #[test]
    fn forgotten_partitions_leave_the_session_and_epoch_minus_one_closes_it() {
        let cache = FetchSessionCache::new(10);
        let (a, b) = (("t".to_owned(), 0), ("t".to_owned(), 1));
        let SessionUse::New(id) = cache
            .begin(
                0,
                0,
                vec![(a.clone(), partition(0)), (b.clone(), partition(0))],
                vec![],
                false,
            )
            .unwrap()
        else {
            panic!()
        };
        let SessionUse::Incremental(_, partitions) =
            cache.begin(id, 1, vec![], vec![a], false).unwrap()
        else {
            panic!()
        };
        assert_eq!(partitions.keys().collect::<Vec<_>>(), vec![&b]);
        assert!(matches!(
            cache.begin(id, -1, vec![], vec![], false).unwrap(),
            SessionUse::Sessionless
        ));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_answers_with_session_id_zero() {
        let cache = FetchSessionCache::new(1);
        assert!(
            matches!(cache.begin(0, 0, vec![], vec![], false).unwrap(), SessionUse::New(id) if id > 0)
        );
        assert!(matches!(
            cache.begin(0, 0, vec![], vec![], false).unwrap(),
            SessionUse::New(0)
        ));
    }
}
