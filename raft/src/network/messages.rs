//! Raft RPC messages as they travel between controllers: our own versioned structs (rkyv via
//! [`crate::codec`]), converted to and from openraft's request and response types at the edge.

use std::io;

use rkyv::{Archive, Deserialize, Serialize};

use crate::stored::{
    log_id_from_stored, log_id_to_stored, StoredEntry, StoredLogId, StoredSnapshotMeta, StoredVote,
};
use crate::type_config::{Entry, SnapshotMeta, TypeConfig, Vote};

type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<TypeConfig>;
type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;
type VoteResponse = openraft::raft::VoteResponse<TypeConfig>;

#[derive(Debug, Archive, Serialize, Deserialize)]
pub struct WireVoteRequest {
    pub vote: StoredVote,
    pub last_log_id: Option<StoredLogId>,
    pub leadership_transfer: bool,
}

#[derive(Debug, Archive, Serialize, Deserialize)]
pub enum Request {
    AppendEntries {
        vote: StoredVote,
        prev_log_id: Option<StoredLogId>,
        entries: Vec<StoredEntry>,
        leader_commit: Option<StoredLogId>,
    },
    Vote(WireVoteRequest),
    PreVote(WireVoteRequest),
    /// A request of the application on top of the quorum (broker -> controller calls such
    /// as registration, heartbeats and forwarded admin requests), opaque to this crate.
    Application(Vec<u8>),
    /// A whole snapshot in one frame (bounded by `FRAME_BYTES_MAX`).
    FullSnapshot {
        vote: StoredVote,
        meta: StoredSnapshotMeta,
        image: Vec<u8>,
    },
}

/// Wire messages are not migrated (see `crate::format_v1`): entries inside are of format 2.
impl crate::codec::Layout for Request {
    const SINCE: u8 = 2;
}

impl crate::codec::Layout for Response {
    const SINCE: u8 = 1;
}

#[derive(Debug, Archive, Serialize, Deserialize)]
pub enum AppendOutcome {
    Success,
    PartialSuccess(Option<StoredLogId>),
    Conflict,
    HigherVote(StoredVote),
}

#[derive(Debug, Archive, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(AppendOutcome),
    Vote {
        vote: StoredVote,
        vote_granted: bool,
        last_log_id: Option<StoredLogId>,
    },
    Snapshot {
        vote: StoredVote,
    },
    /// The application's answer to [`Request::Application`].
    Application(Vec<u8>),
    /// The receiving node could not handle the request (its Raft stopped, or the request
    /// did not decode); the sender treats the node as unreachable for now.
    Refused(String),
}

impl Request {
    pub fn append_entries(request: &AppendEntriesRequest) -> Request {
        Request::AppendEntries {
            vote: StoredVote::from(&request.vote),
            prev_log_id: log_id_to_stored(&request.prev_log_id),
            entries: request.entries.iter().map(StoredEntry::from).collect(),
            leader_commit: log_id_to_stored(&request.leader_commit),
        }
    }

    pub fn vote(request: &VoteRequest) -> WireVoteRequest {
        WireVoteRequest {
            vote: StoredVote::from(&request.vote),
            last_log_id: log_id_to_stored(&request.last_log_id),
            leadership_transfer: request.leadership_transfer,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Request::AppendEntries { .. } => "append entries",
            Request::Vote(_) => "vote",
            Request::PreVote(_) => "pre-vote",
            Request::FullSnapshot { .. } => "snapshot",
            Request::Application(_) => "application",
        }
    }
}

pub fn into_append_entries_request(
    vote: StoredVote,
    prev_log_id: Option<StoredLogId>,
    entries: Vec<StoredEntry>,
    leader_commit: Option<StoredLogId>,
) -> io::Result<AppendEntriesRequest> {
    Ok(AppendEntriesRequest {
        vote: Vote::from(vote),
        prev_log_id: log_id_from_stored(prev_log_id),
        entries: entries
            .into_iter()
            .map(Entry::try_from)
            .collect::<io::Result<Vec<_>>>()?,
        leader_commit: log_id_from_stored(leader_commit),
    })
}

pub fn into_vote_request(wire: WireVoteRequest) -> VoteRequest {
    let mut request = VoteRequest::new(Vote::from(wire.vote), log_id_from_stored(wire.last_log_id));
    request.leadership_transfer = wire.leadership_transfer;
    request
}

pub fn into_snapshot_meta(meta: StoredSnapshotMeta) -> io::Result<SnapshotMeta> {
    SnapshotMeta::try_from(meta)
}

impl From<&AppendEntriesResponse> for AppendOutcome {
    fn from(response: &AppendEntriesResponse) -> AppendOutcome {
        match response {
            AppendEntriesResponse::Success => AppendOutcome::Success,
            AppendEntriesResponse::PartialSuccess(log_id) => {
                AppendOutcome::PartialSuccess(log_id_to_stored(log_id))
            }
            AppendEntriesResponse::Conflict => AppendOutcome::Conflict,
            AppendEntriesResponse::HigherVote(vote) => {
                AppendOutcome::HigherVote(StoredVote::from(vote))
            }
        }
    }
}

impl From<AppendOutcome> for AppendEntriesResponse {
    fn from(outcome: AppendOutcome) -> AppendEntriesResponse {
        match outcome {
            AppendOutcome::Success => AppendEntriesResponse::Success,
            AppendOutcome::PartialSuccess(log_id) => {
                AppendEntriesResponse::PartialSuccess(log_id_from_stored(log_id))
            }
            AppendOutcome::Conflict => AppendEntriesResponse::Conflict,
            AppendOutcome::HigherVote(vote) => AppendEntriesResponse::HigherVote(Vote::from(vote)),
        }
    }
}

pub fn vote_response(response: &VoteResponse) -> Response {
    Response::Vote {
        vote: StoredVote::from(&response.vote),
        vote_granted: response.vote_granted,
        last_log_id: log_id_to_stored(&response.last_log_id),
    }
}

pub fn into_vote_response(
    vote: StoredVote,
    vote_granted: bool,
    last_log_id: Option<StoredLogId>,
) -> VoteResponse {
    VoteResponse::new(
        Vote::from(vote),
        log_id_from_stored(last_log_id),
        vote_granted,
    )
}
