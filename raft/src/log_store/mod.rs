//! openraft's log storage: the vote, the purge point, the committed hint and the entries.
//!
//! Durability contract (DESIGN §3): the vote and the purge point are fdatasynced before
//! `save_vote`/`purge` return; entries are written in `append` and reported to openraft as
//! done only by the group-commit flusher after fdatasync (see [`flusher`]). Truncation is
//! synced before it returns. The committed log id is only a hint that lets a restarted node
//! re-apply its log before it hears from a leader, so it is written without a sync.
//!
//! Files in the log directory:
//!
//! | file | contents |
//! | --- | --- |
//! | `log-state` | vote and last purged log id ([`crate::durable_file`], synced) |
//! | `committed` | last committed log id known to this node (unsynced hint) |
//! | `NNN….raftlog` | segments of entries ([`segments`]) |

mod flusher;
mod segments;

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rkyv::{Archive, Deserialize, Serialize};

use crate::codec;
use crate::durable_file::{self, Durability};
use crate::stored::{log_id_from_stored, StoredEntry, StoredLogId, StoredVote};
use crate::type_config::{Entry, LogId, TypeConfig, Vote};
use flusher::{FlushRequest, Flusher};
use segments::SegmentLog;

const LOG_STATE_FILE: &str = "log-state";
const COMMITTED_FILE: &str = "committed";

/// Default segment size. The metadata log is small and purged after each snapshot; 64 MiB
/// keeps the number of files low while letting purges free space in useful steps.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, Archive, Serialize, Deserialize)]
struct StoredLogState {
    vote: Option<StoredVote>,
    purged: Option<StoredLogId>,
}

impl codec::Layout for StoredLogState {
    const SINCE: u8 = 1;
}

struct State {
    log: SegmentLog,
    durable: StoredLogState,
    committed: Option<StoredLogId>,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    flusher: Flusher,
}

/// The Raft log of one node. Cheap to clone; clones share the files (openraft's log reader
/// is such a clone).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path, segment_bytes_max: u64) -> io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let durable = match durable_file::read(dir, LOG_STATE_FILE, false)? {
            Some(bytes) => codec::decode::<StoredLogState>(&bytes)?,
            None => StoredLogState::default(),
        };
        let committed = match durable_file::read(dir, COMMITTED_FILE, true)? {
            Some(bytes) => codec::decode::<Option<StoredLogId>>(&bytes).unwrap_or(None),
            None => None,
        };
        let log = SegmentLog::open(dir, segment_bytes_max, durable.purged)?;
        let flusher = Flusher::start(format!("raft-log-flush-{}", dir.display()))?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                state: Mutex::new(State {
                    log,
                    durable,
                    committed,
                }),
                flusher,
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock means an invariant broke mid-update; nothing on disk
        // or in memory can be trusted after that.
        self.shared
            .state
            .lock()
            .expect("raft log state lock poisoned")
    }

    fn save_durable(&self, state: &mut State, next: StoredLogState) -> io::Result<()> {
        let bytes = codec::encode(&next)?;
        durable_file::replace(&self.shared.dir, LOG_STATE_FILE, &bytes, Durability::Synced)?;
        state.durable = next;
        Ok(())
    }
}

fn range_to_indexes(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&index) => index,
        Bound::Excluded(&index) => index.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&index) => index.saturating_add(1),
        Bound::Excluded(&index) => index,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = range_to_indexes(&range);
        let stored = self.state().log.read(start, end)?;
        stored.into_iter().map(Entry::try_from).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.state().durable.vote.map(Vote::from))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = self.state();
        let purged = state.durable.purged;
        let last = state.log.last_log_id().or(purged);
        Ok(LogState {
            last_purged_log_id: log_id_from_stored(purged),
            last_log_id: log_id_from_stored(last),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    /// Synced before it returns: a vote forgotten in a crash could let this node vote twice
    /// in one term.
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut state = self.state();
        let next = StoredLogState {
            vote: Some(StoredVote::from(vote)),
            ..state.durable.clone()
        };
        self.save_durable(&mut state, next)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let stored = committed.as_ref().map(StoredLogId::from);
        let mut state = self.state();
        if state.committed == stored {
            return Ok(());
        }
        let bytes = codec::encode(&stored)?;
        durable_file::replace(
            &self.shared.dir,
            COMMITTED_FILE,
            &bytes,
            Durability::Eventual,
        )?;
        state.committed = stored;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let state = self.state();
        // The hint may be older than the purge point if it was lost in a crash; it can never
        // usefully be newer than what the log holds.
        let last = state.log.last_log_id().or(state.durable.purged);
        let committed = match (state.committed, last) {
            (Some(committed), Some(last)) if committed.index <= last.index => Some(committed),
            _ => None,
        };
        Ok(log_id_from_stored(committed))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let stored: Vec<StoredEntry> = entries.into_iter().map(|e| StoredEntry::from(&e)).collect();
        let file = {
            let mut state = self.state();
            let purged = state.durable.purged;
            state.log.append(&stored, purged)?
        };
        match file {
            Some(file) => self.shared.flusher.submit(FlushRequest { file, callback }),
            None => callback.io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let last_kept = last_log_id.map(|log_id| log_id.index);
        self.state().log.truncate_after(last_kept)
    }

    /// The purge point is made durable before any segment is deleted, so a crash in between
    /// leaves entries that are skipped on open, never a log with a hole.
    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let purged = StoredLogId::from(&log_id);
        let mut state = self.state();
        if state
            .durable
            .purged
            .is_some_and(|p| p.index >= purged.index)
        {
            return Ok(());
        }
        let next = StoredLogState {
            purged: Some(purged),
            ..state.durable.clone()
        };
        self.save_durable(&mut state, next)?;
        state.log.purge_through(purged.index)
    }
}
