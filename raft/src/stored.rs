//! Our own persisted (and wire) forms of openraft's values: log ids, votes, entries,
//! memberships and snapshot metadata.
//!
//! DESIGN §3: never persist openraft's structs directly. They change between alpha releases
//! (and serde of them is openraft's format, not ours); these mirror them field by field,
//! derive rkyv, and convert both ways. A change here is a format change (see
//! [`crate::codec::FORMAT_VERSION`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use openraft::entry::RaftEntry;
use openraft::vote::{RaftLeaderId, RaftVote};
use rkyv::{Archive, Deserialize, Serialize};

use crate::codec;
use crate::records::MetadataBatch;
use crate::type_config::{
    CommittedLeaderId, ControllerNode, Entry, EntryPayload, LeaderId, LogId, Membership,
    SnapshotMeta, StoredMembership, Vote,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct StoredLogId {
    pub term: u64,
    pub index: u64,
}

impl From<&LogId> for StoredLogId {
    fn from(log_id: &LogId) -> StoredLogId {
        StoredLogId {
            term: log_id.leader_id.term,
            index: log_id.index,
        }
    }
}

impl From<StoredLogId> for LogId {
    fn from(stored: StoredLogId) -> LogId {
        LogId::new(CommittedLeaderId::new(stored.term), stored.index)
    }
}

pub fn log_id_to_stored(log_id: &Option<LogId>) -> Option<StoredLogId> {
    log_id.as_ref().map(StoredLogId::from)
}

pub fn log_id_from_stored(stored: Option<StoredLogId>) -> Option<LogId> {
    stored.map(LogId::from)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct StoredVote {
    pub term: u64,
    pub voted_for: u64,
    pub committed: bool,
}

impl From<&Vote> for StoredVote {
    fn from(vote: &Vote) -> StoredVote {
        StoredVote {
            term: vote.leader_id().term(),
            voted_for: *vote.leader_id().node_id(),
            committed: vote.is_committed(),
        }
    }
}

impl From<StoredVote> for Vote {
    fn from(stored: StoredVote) -> Vote {
        Vote::from_leader_id(
            LeaderId::new(stored.term, stored.voted_for),
            stored.committed,
        )
    }
}

/// A membership: the voter sets (two during a joint change) and every node's address.
#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct StoredMembershipConfig {
    pub voter_sets: Vec<Vec<u64>>,
    pub nodes: Vec<(u64, String)>,
}

impl From<&Membership> for StoredMembershipConfig {
    fn from(membership: &Membership) -> StoredMembershipConfig {
        StoredMembershipConfig {
            voter_sets: membership
                .get_joint_config()
                .iter()
                .map(|set| set.iter().copied().collect())
                .collect(),
            nodes: membership
                .nodes()
                .map(|(id, node)| (*id, node.address.clone()))
                .collect(),
        }
    }
}

impl TryFrom<StoredMembershipConfig> for Membership {
    type Error = io::Error;

    fn try_from(stored: StoredMembershipConfig) -> io::Result<Membership> {
        let voter_sets: Vec<BTreeSet<u64>> = stored
            .voter_sets
            .into_iter()
            .map(|set| set.into_iter().collect())
            .collect();
        let nodes: BTreeMap<u64, ControllerNode> = stored
            .nodes
            .into_iter()
            .map(|(id, address)| (id, ControllerNode { address }))
            .collect();
        Membership::new(voter_sets, nodes)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))
    }
}

/// A membership together with the log id of the entry that set it.
#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct StoredMembershipState {
    pub log_id: Option<StoredLogId>,
    pub config: StoredMembershipConfig,
}

impl From<&StoredMembership> for StoredMembershipState {
    fn from(membership: &StoredMembership) -> StoredMembershipState {
        StoredMembershipState {
            log_id: log_id_to_stored(membership.log_id()),
            config: StoredMembershipConfig::from(membership.membership()),
        }
    }
}

impl TryFrom<StoredMembershipState> for StoredMembership {
    type Error = io::Error;

    fn try_from(stored: StoredMembershipState) -> io::Result<StoredMembership> {
        Ok(StoredMembership::new(
            log_id_from_stored(stored.log_id),
            Membership::try_from(stored.config)?,
        ))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub enum StoredPayload {
    /// Written by each new leader to commit its term.
    Blank,
    Records(MetadataBatch),
    Membership(StoredMembershipConfig),
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct StoredEntry {
    pub log_id: StoredLogId,
    pub payload: StoredPayload,
}

impl From<&Entry> for StoredEntry {
    fn from(entry: &Entry) -> StoredEntry {
        let payload = match &entry.payload {
            EntryPayload::Blank => StoredPayload::Blank,
            EntryPayload::Normal(batch) => StoredPayload::Records(batch.clone()),
            EntryPayload::Membership(membership) => {
                StoredPayload::Membership(StoredMembershipConfig::from(membership))
            }
        };
        StoredEntry {
            log_id: StoredLogId::from(&entry.log_id()),
            payload,
        }
    }
}

impl TryFrom<StoredEntry> for Entry {
    type Error = io::Error;

    fn try_from(stored: StoredEntry) -> io::Result<Entry> {
        let payload = match stored.payload {
            StoredPayload::Blank => EntryPayload::Blank,
            StoredPayload::Records(batch) => EntryPayload::Normal(batch),
            StoredPayload::Membership(config) => {
                EntryPayload::Membership(Membership::try_from(config)?)
            }
        };
        Ok(Entry {
            log_id: LogId::from(stored.log_id),
            payload,
        })
    }
}

/// Entries of version 1 are read through [`crate::format_v1::decode_entry`].
impl codec::Layout for StoredEntry {
    const SINCE: u8 = 2;
}

impl codec::Layout for Option<StoredLogId> {
    const SINCE: u8 = 1;
}

#[derive(Clone, Debug, PartialEq, Eq, Archive, Serialize, Deserialize)]
pub struct StoredSnapshotMeta {
    pub last_log_id: Option<StoredLogId>,
    pub last_membership: StoredMembershipState,
}

impl From<&SnapshotMeta> for StoredSnapshotMeta {
    fn from(meta: &SnapshotMeta) -> StoredSnapshotMeta {
        StoredSnapshotMeta {
            last_log_id: log_id_to_stored(&meta.last_log_id),
            last_membership: StoredMembershipState::from(&meta.last_membership),
        }
    }
}

impl TryFrom<StoredSnapshotMeta> for SnapshotMeta {
    type Error = io::Error;

    fn try_from(stored: StoredSnapshotMeta) -> io::Result<SnapshotMeta> {
        Ok(SnapshotMeta {
            last_log_id: log_id_from_stored(stored.last_log_id),
            last_membership: StoredMembership::try_from(stored.last_membership)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::MetadataRecord;

    #[test]
    fn entries_round_trip_through_our_format() {
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            BTreeMap::from([
                (1, ControllerNode::new("127.0.0.1:1")),
                (2, ControllerNode::new("127.0.0.1:2")),
                (3, ControllerNode::new("127.0.0.1:3")),
                (4, ControllerNode::new("127.0.0.1:4")),
            ]),
        )
        .unwrap();
        let batch = MetadataBatch::new(vec![MetadataRecord::RemoveTopic {
            topic_id: uuid::Uuid::new_v4(),
        }]);
        let log_id = LogId::new(CommittedLeaderId::new(3), 9);
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(batch),
            EntryPayload::Membership(membership),
        ] {
            let entry = Entry { log_id, payload };
            let bytes = codec::encode(&StoredEntry::from(&entry)).unwrap();
            let back = Entry::try_from(codec::decode::<StoredEntry>(&bytes).unwrap()).unwrap();
            assert_eq!(back, entry);
        }
    }

    #[test]
    fn votes_round_trip() {
        let vote = Vote::from_leader_id(LeaderId::new(5, 2), true);
        assert_eq!(Vote::from(StoredVote::from(&vote)), vote);
    }
}
